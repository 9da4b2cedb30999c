from __future__ import annotations

import pytest

from egressmail.gateway.errors import InvalidGatewayOption
from egressmail.gateway.options import (
    ConnectTo,
    GatewayOptions,
    Limits,
    Timeouts,
    find_pin,
    parse_connect_to,
    pinned_elsewhere,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("smtp.sendgrid.com:465=127.0.0.1:2465", ConnectTo("smtp.sendgrid.com", 465, "127.0.0.1", 2465)),
    ("SMTP.SendGrid.com.:465=127.0.0.1:2465", ConnectTo("smtp.sendgrid.com", 465, "127.0.0.1", 2465)),
    ("smtp.sendgrid.com=127.0.0.1", ConnectTo("smtp.sendgrid.com", None, "127.0.0.1", None)),
    ("smtp.sendgrid.com:465=[::1]:2465", ConnectTo("smtp.sendgrid.com", 465, "::1", 2465)),
    ("smtp.sendgrid.com:465=[::1]", ConnectTo("smtp.sendgrid.com", 465, "::1", None)),
    ("smtp.sendgrid.com:465:127.0.0.1:2465", ConnectTo("smtp.sendgrid.com", 465, "127.0.0.1", 2465)),
    ("smtp.sendgrid.com::127.0.0.1:", ConnectTo("smtp.sendgrid.com", None, "127.0.0.1", None)),
    ("a.test:80=backend.local:8080", ConnectTo("a.test", 80, "backend.local", 8080)),
])
def test_connect_to_forms(text, expected):
    assert parse_connect_to(text) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("smtp.sendgrid.com:465=127.0.0.1:99999", "port '99999'"),
    ("smtp.sendgrid.com:abc=127.0.0.1:2465", "port 'abc'"),
    ("smtp.sendgrid.com:465=", "host is empty"),
    ("=127.0.0.1:1", "host is empty"),
    ("smtp.sendgrid.com:465=::1:2465", "more than one ':'"),
    ("smtp.sendgrid.com:465=[::1:2465", "without closing"),
    ("smtp.sendgrid.com:465=[nothex]:2465", "not an IPv6"),
    ("just-a-name", "expected NAME:PORT=HOST:PORT"),
    # "²".isdigit() is True but int() refuses it; int() also refuses thousands of digits.
    ("smtp.sendgrid.com:\u00b2=127.0.0.1:2465", "is not a number"),
    ("smtp.sendgrid.com:465=127.0.0.1:" + "1" * 5000, "is not a number"),
])
def test_bad_connect_to_says_what_and_how(text, fragment):
    with pytest.raises(InvalidGatewayOption) as info:
        parse_connect_to(text)
    assert fragment in info.value.message
    assert "--connect-to" in info.value.message


def test_connect_to_round_trips_through_str():
    for text in ("smtp.sendgrid.com:465=127.0.0.1:2465", "a.test=[::1]:25", "a.test:1=b.test"):
        assert str(parse_connect_to(text)) == text


def test_find_pin_first_match_and_port_kept():
    pins = (parse_connect_to("a.test:465=127.0.0.1:2465"), parse_connect_to("a.test=127.0.0.9"))
    assert find_pin(pins, "a.test", 465, port_forward=True) == ("127.0.0.1", 2465)
    assert find_pin(pins, "A.TEST", 587, port_forward=True) == ("127.0.0.9", 587)
    assert find_pin(pins, "b.test", 465, port_forward=True) is None


def test_the_http_proxy_follows_only_pins_for_its_exact_name_and_port():
    pins = (parse_connect_to("a.test:443=127.0.0.1:2443"), parse_connect_to("b.test=127.0.0.9"))
    assert find_pin(pins, "a.test.", 443, port_forward=False) == ("127.0.0.1", 2443)
    assert find_pin(pins, "a.test", 8443, port_forward=False) is None
    assert find_pin(pins, "b.test", 443, port_forward=False) is None  # no port: port forwards only
    # ...and a name some pin names, on a port no pin covers, is refused rather than resolved
    assert pinned_elsewhere(pins, "A.test", 8443) == pins[0]
    assert pinned_elsewhere(pins, "b.test", 443) == pins[1]
    assert pinned_elsewhere(pins, "a.test", 443) is None
    assert pinned_elsewhere(pins, "c.test", 443) is None


def test_limits_max_lookups():
    assert Limits().max_lookups == 16
    with pytest.raises(ValueError, match="max_lookups"):
        Limits(max_lookups=0)


def test_timeouts_and_limits_defaults_and_validation():
    assert Timeouts() == Timeouts(connect=10.0, idle=300.0, request=10.0)
    assert Limits().max_connections == 1000
    with pytest.raises(ValueError, match="Timeouts.idle"):
        Timeouts(idle=0)
    with pytest.raises(ValueError, match="max_connections"):
        Limits(max_connections=0)
    with pytest.raises(ValueError, match="low_water"):
        Limits(high_water=10, low_water=20)


def test_egress_address_must_be_an_ip():
    with pytest.raises(InvalidGatewayOption, match="not an IP address"):
        GatewayOptions(egress_address="egress.example.com")


def test_listen_port_for():
    assert GatewayOptions(port_offset=1000).listen_port_for(30465) == 31465
    assert GatewayOptions(ephemeral_ports=True).listen_port_for(30465) == 0


@pytest.mark.parametrize("text", ["127.0.0.1:\u00b2", "127.0.0.1:" + "9" * 5000, "70000"])
def test_bad_metrics_address_is_an_option_error(text):
    from egressmail.gateway.metrics import parse_host_port

    with pytest.raises(InvalidGatewayOption) as info:
        parse_host_port(text, "--metrics")
    assert "--metrics" in info.value.message
