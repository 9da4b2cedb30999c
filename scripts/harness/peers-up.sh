#!/usr/bin/env bash
# Starts real third-party mail peers on loopback for interoperability tests and benchmarks:
#   Postfix (with Dovecot SASL) as the mail provider, HAProxy and socat as peer forwarders.
# Idempotent: run it again and it reconfigures and restarts what it started. Loopback only.
# (egressmail's copy of the shared harness: tests/interop/ starts it from a session fixture.)
set -euo pipefail
STATE=${HARNESS_STATE:-/var/tmp/egressmail-harness}
USER_NAME=${HARNESS_USER:-apikey}
USER_PASS=${HARNESS_PASS:-password123}
mkdir -p "$STATE"

need=()
for p in postfix:postfix dovecot:dovecot-core swaks:swaks haproxy:haproxy socat:socat openssl:openssl; do
  command -v "${p%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${p%%:*}" ] || need+=("${p#*:}")
done
# swaks (peers-check.sh) speaks TLS through Net::SSLeay, which --no-install-recommends leaves out
perl -MNet::SSLeay -e 1 >/dev/null 2>&1 || need+=(libnet-ssleay-perl)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

# --- certificates: a test CA and one server certificate for every name the tests use
if [ ! -s "$STATE/ca.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=egressmail harness CA" \
    -keyout "$STATE/ca.key" -out "$STATE/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=smtp.sendgrid.com" \
    -keyout "$STATE/server.key" -out "$STATE/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:smtp.sendgrid.com,DNS:smtp.sendgrid.net,DNS:smtp.example.test,DNS:localhost,IP:127.0.0.1\n' > "$STATE/san.ext"
  openssl x509 -req -in "$STATE/server.csr" -CA "$STATE/ca.pem" -CAkey "$STATE/ca.key" -CAcreateserial \
    -days 3650 -extfile "$STATE/san.ext" -out "$STATE/server.pem" 2>/dev/null
  # a second certificate for a name no rule uses, to test that a wrong name is refused
  openssl req -newkey rsa:2048 -nodes -subj "/CN=wrong.example.test" \
    -keyout "$STATE/wrong.key" -out "$STATE/wrong.csr" 2>/dev/null
  printf 'subjectAltName=DNS:wrong.example.test\n' > "$STATE/wrong.ext"
  openssl x509 -req -in "$STATE/wrong.csr" -CA "$STATE/ca.pem" -CAkey "$STATE/ca.key" -CAcreateserial \
    -days 3650 -extfile "$STATE/wrong.ext" -out "$STATE/wrong.pem" 2>/dev/null
fi
chmod 644 "$STATE"/*.pem; chmod 640 "$STATE"/*.key; chgrp dovecot "$STATE"/server.key 2>/dev/null || true

# --- Dovecot: SASL authentication only (no IMAP/POP), for Postfix
mkdir -p "$STATE/dovecot"
printf '%s:{PLAIN}%s\n' "$USER_NAME" "$USER_PASS" > "$STATE/dovecot/passwd"
cat > "$STATE/dovecot/dovecot.conf" <<CONF
protocols =
listen = 127.0.0.1
base_dir = $STATE/dovecot/run
log_path = $STATE/dovecot/dovecot.log
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN $STATE/dovecot/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
service auth {
  unix_listener /var/spool/postfix/private/harness-auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
ssl = no
CONF
mkdir -p /var/spool/postfix/private
if [ -s "$STATE/dovecot/run/master.pid" ] && kill -0 "$(cat "$STATE/dovecot/run/master.pid")" 2>/dev/null; then
  kill "$(cat "$STATE/dovecot/run/master.pid" 2>/dev/null)" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$(cat "$STATE/dovecot/run/master.pid" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
fi
dovecot -c "$STATE/dovecot/dovecot.conf"

# --- Postfix: every recipient lands in one local Maildir; nothing is relayed anywhere
id harness >/dev/null 2>&1 || useradd -r -m -d "$STATE/mailhome" -s /usr/sbin/nologin harness
mkdir -p "$STATE/mailhome"; chown harness "$STATE/mailhome"
printf '/.*/ harness\n' > /etc/postfix/harness_virtual_regexp
cat > /etc/postfix/main.cf <<CONF
compatibility_level = 3.6
myhostname = smtp.sendgrid.com
mydomain = example.test
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination = \$myhostname, localhost, example.test
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
virtual_alias_maps = regexp:/etc/postfix/harness_virtual_regexp
home_mailbox = Maildir/
relayhost =
default_transport = error:relaying is disabled in the harness
relay_transport = error:relaying is disabled in the harness
smtputf8_enable = no
message_size_limit = 52428800
mailbox_size_limit = 0
virtual_alias_domains =
smtpd_tls_cert_file = $STATE/server.pem
smtpd_tls_key_file = $STATE/server.key
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/harness-auth
smtpd_sasl_auth_enable = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
maillog_file = $STATE/postfix.log
CONF
cat > /etc/postfix/master.cf <<'CONF'
# service type private unpriv chroot wakeup maxproc command
127.0.0.1:2465 inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt
127.0.0.1:2587 inet n - n - - smtpd -o smtpd_tls_security_level=encrypt -o smtpd_tls_auth_only=yes
127.0.0.1:2525 inet n - n - - smtpd -o smtpd_tls_security_level=none -o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=no
127.0.0.1:2466 inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt -o smtpd_tls_cert_file=${harness_wrong_cert} -o smtpd_tls_key_file=${harness_wrong_key}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CONF
postconf -e "harness_wrong_cert = $STATE/wrong.pem" "harness_wrong_key = $STATE/wrong.key"
newaliases 2>/dev/null || true
postfix check
postfix stop >/dev/null 2>&1 || true
postfix start >/dev/null 2>&1

# --- peer forwarders: HAProxy and socat in front of the implicit-TLS port
cat > "$STATE/haproxy.cfg" <<CONF
global
  maxconn 4000
  pidfile $STATE/haproxy.pid
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen smtps
  bind 127.0.0.1:31002
  server provider 127.0.0.1:2465
listen submission
  bind 127.0.0.1:31587
  server provider 127.0.0.1:2587
CONF
[ -s "$STATE/haproxy.pid" ] && kill "$(cat "$STATE/haproxy.pid")" 2>/dev/null || true
haproxy -D -f "$STATE/haproxy.cfg"
[ -s "$STATE/socat.pid" ] && kill "$(cat "$STATE/socat.pid")" 2>/dev/null || true
nohup socat TCP-LISTEN:32002,bind=127.0.0.1,reuseaddr,fork TCP:127.0.0.1:2465 >/dev/null 2>&1 &
echo $! > "$STATE/socat.pid"
for port in 2465 2587 2525 2466 31002 31587 32002; do
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
echo "harness up: state in $STATE (CA: $STATE/ca.pem), user $USER_NAME"
