"""A known secret, run through every command and error path, appears nowhere: output, logs, files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CANARY = "Zq9-LEAK-CANARY-7f3e"

# Runs the real CLI with every logger at DEBUG on stderr, so a log line holding the secret is caught.
RUNNER = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
    "from egressmail.cli.main import cli\n"
    "cli.main(args=sys.argv[1:], prog_name='egressmail')\n"
)


def run(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("EGRESSMAIL_MASTER_KEY", None)
    env.update({"EGRESSMAIL_HOME": str(home), "COLUMNS": "200", "AIO_CLOUDMANAGER_PROGRAMID": ""})
    return subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, env=env,
                          input=input, timeout=60, check=False)


def test_secret_never_leaks(home: Path, tmp_path: Path) -> None:
    cm = "cloudmanager:set-environment-variables"
    json_file = tmp_path / "vars.json"
    json_file.write_text(f'[{{"name": "FILE_PW", "value": "{CANARY}", "type": "secretString"}}]')
    runs: list[tuple[tuple[str, ...], str | None, int]] = [
        ((cm, "--programId=1001", "2002", "--secret", "EMAIL_PASSWORD", CANARY, "-v", "HOST", "h"), None, 0),
        ((cm, "-p", "1001", "2002", "--publishSecret", "EMAIL_PASSWORD", CANARY, "--json"), None, 0),
        ((cm, "-p", "1001", "2002", "--authorSecret", "EMAIL_PASSWORD", CANARY, "--yaml"), None, 0),
        ((cm, "-p", "1001", "2002", "--jsonFile", str(json_file)), None, 0),
        ((cm, "-p", "1001", "2002", "--jsonStdin"),
         f'[{{"name": "STDIN_PW", "value": "{CANARY}", "type": "secretString"}}]', 0),
        ((cm, "-p", "1001", "2002", "--yamlStdin"),
         f"- name: YAML_PW\n  value: {CANARY}\n  type: secretString\n", 0),
        (("env", "set", "1001", "2003", "-s", "EMAIL_PASSWORD", CANARY + "-other"), None, 0),
        (("env", "set", "1001", "2002", "-s", "PLAIN_PW", CANARY, "--json"), None, 0),
        (("cloudmanager:list-environment-variables", "-p", "1001", "2002"), None, 0),
        (("cloudmanager:list-environment-variables", "-p", "1001", "2002", "-j"), None, 0),
        (("cloudmanager:environment:list-variables", "-p", "1001", "2002", "-y"), None, 0),
        (("env", "list", "1001", "2002"), None, 0),
        (("env", "list", "1001", "2002", "--json"), None, 0),
        (("env", "diff", "1001", "2002", "2003"), None, 0),
        (("env", "diff", "1001", "2002", "2003", "--json"), None, 0),
        (("env", "export", "1001", "2002"), None, 0),
        (("env", "rotate-key",), None, 0),
        (("env", "list", "1001", "2002"), None, 0),
        # Error paths, each with the secret somewhere in the input.
        ((cm, "-p", "1001", "2002", "-v", "EMAIL_PASSWORD", CANARY), None, 3),  # type change
        ((cm, "-p", "1001", "2002", "-s", "PW", CANARY, "ORPHAN"), None, 3),  # malformed pair
        ((cm, "-p", "1001", "2002", CANARY, "-s", "PW", "x"), None, 3),  # extra positional
        ((cm, "-p", "1001", "2002", f"--frob={CANARY}"), None, 3),  # unknown flag
        ((cm, "-p", "1001", "2002", "-s", "LONG_PW", CANARY * 30), None, 3),  # too long
        ((cm, "-p", "1001", "2002", "-s", "AEM_PW", CANARY), None, 3),  # product name
        ((cm, "-p", "1001", "2002", "--strict", "-s", "INTERNAL_PW", CANARY), None, 3),  # reserved
        ((cm, "-p", "1001", "2002", "-s", "INTERNAL_PW", CANARY), None, 0),  # reserved: warning
        ((cm, "2002", "-s", "PW", CANARY), None, 3),  # no program id
        ((cm, "-p", "1001", "2002", "--jsonStdin"), f'[{{"name": "X_PW", "value": "{CANARY}"', 3),
        ((cm, "-p", "1001", "2002", "--yamlStdin"), f"- name: PW\n  value: {CANARY}\n  : : [", 3),
        ((cm, "-p", "1001", "2002", "--jsonStdin"),
         f'[{{"name": "X_PW", "value": "{CANARY}", "type": "secret"}}]', 3),
        (("env", "set", "1001", "2002", "-v", "EMAIL_PASSWORD", CANARY), None, 3),
        (("env", "set", "1001", "2002", "-s", "BAD NAME", CANARY), None, 3),
        (("env", "import", "1001", "2002", "-"), f'[{{"name": "EMAIL_PASSWORD", "value": "{CANARY}"}}]', 3),
    ]
    transcript: list[str] = []
    for args, stdin, expected in runs:
        done = run(home, *args, input=stdin)
        assert done.returncode == expected, (args[:3], done.stderr)
        assert "Traceback" not in done.stderr, args[:3]
        transcript += [done.stdout, done.stderr]
    everything = "\n".join(transcript)
    assert "****" in everything and "INFO:egressmail" in everything  # outputs and logs were captured
    assert CANARY not in everything
    for path in home.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
            assert path.stat().st_mode & 0o077 == 0, path  # owner-only
    # And the value is really there, for the one API meant to return it.
    from egressmail.environments import placeholder_values
    from egressmail.storage import Database

    values = placeholder_values(Database(home), "1001", "2002", "publish")
    assert values.secrets["EMAIL_PASSWORD"] == CANARY
    assert CANARY not in repr(values)
