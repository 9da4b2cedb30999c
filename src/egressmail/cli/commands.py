"""The table of top-level commands; each lives in its own module, imported only when used.

Importing every part (aiosmtplib, prometheus-client, the gateway) costs ~0.4 s, which every
``egressmail env set`` would pay; so the group knows commands by name and imports a module only when
its command runs (or when ``--help`` lists them).
"""

from __future__ import annotations

# name -> "module:attribute" (an attribute that is a click command, or a function returning a list of
# commands for several names, written "module:function()")
COMMANDS: dict[str, str] = {
    "config": "egressmail.cli.config_cmd:config",
    "env": "egressmail.cli.env_cmd:env",
    "network": "egressmail.cli.network_cmd:network",
    "gateway": "egressmail.cli.gateway_cmd:gateway",
    "send": "egressmail.cli.send_cmd:send",
    "outbox": "egressmail.cli.outbox_cmd:outbox",
    "worker": "egressmail.cli.worker_cmd:worker",
    "doctor": "egressmail.cli.doctor_cmd:doctor",
    "demo": "egressmail.cli.demo_cmd:demo",
}

# The Cloud Manager CLI's names, verbatim (all four come from one module).
CLOUDMANAGER_COMMANDS = (
    "cloudmanager:environment:set-variables",
    "cloudmanager:set-environment-variables",
    "cloudmanager:environment:list-variables",
    "cloudmanager:list-environment-variables",
)
CLOUDMANAGER_MODULE = "egressmail.cli.cloudmanager_cmd"
