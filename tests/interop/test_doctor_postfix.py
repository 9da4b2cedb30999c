"""`egressmail doctor`'s probes against the real Postfix, through the real gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from egressmail.config import ResolvedConfiguration
from egressmail.mail.doctor import DoctorOptions, Layer, Status, run_probes
from egressmail.mail.lint import lint
from egressmail.mail.service_config import ServiceConfig
from egressmail.mail.settings import parse_mail_settings
from tests.interop.conftest import PASSWORD, USER, Harness, RunningGateway

pytestmark = pytest.mark.postfix


def _loaded(gw: RunningGateway, harness: Harness, port: int, *, ssl: bool, requiretls: bool = False
            ) -> ServiceConfig:
    settings = parse_mail_settings({
        "smtp.host": gw.host, "smtp.port": port, "smtp.user": USER, "smtp.password": PASSWORD,
        "from.address": "noreply@wknd.site", "smtp.ssl": ssl, "smtp.requiretls": requiretls,
        "egressmail.tls.cafile": str(harness.cafile),
    }, source="interop.cfg.json")
    return ServiceConfig(settings=settings, egress_map=gw.egress_map, resolved=ResolvedConfiguration({}),
                         findings=tuple(lint(settings, gw.egress_map)), path=Path("interop.cfg.json"))


def _statuses(report) -> dict[str, str]:
    return {r.layer.value: r.status.value for r in report.results}


async def test_implicit_tls_every_layer(postfix_harness: Harness, harness_gateway: RunningGateway) -> None:
    before = len(postfix_harness.messages())
    report = await run_probes(_loaded(harness_gateway, postfix_harness, 30465, ssl=True),
                              DoctorOptions(connect_timeout=5, read_timeout=10))
    assert report.ok, report
    assert _statuses(report)["starttls"] == "skipped"
    ehlo = next(r for r in report.results if r.layer is Layer.EHLO)
    assert "AUTH PLAIN LOGIN" in ehlo.detail
    assert PASSWORD not in str(report.to_dict())
    assert len(postfix_harness.messages()) == before  # no MAIL


async def test_starttls_every_layer(postfix_harness: Harness, harness_gateway: RunningGateway) -> None:
    report = await run_probes(_loaded(harness_gateway, postfix_harness, 30587, ssl=False, requiretls=True),
                              DoctorOptions(connect_timeout=5, read_timeout=10))
    assert report.ok, report
    statuses = _statuses(report)
    assert statuses["tls"] == "skipped" and statuses["starttls"] == "ok" and statuses["auth"] == "ok"


async def test_no_starttls_offered_fails_at_starttls(postfix_harness: Harness,
                                                     harness_gateway: RunningGateway) -> None:
    report = await run_probes(_loaded(harness_gateway, postfix_harness, 30525, ssl=False, requiretls=True),
                              DoctorOptions(connect_timeout=5, read_timeout=10))
    failure = report.first_failure
    assert failure is not None and failure.layer is Layer.STARTTLS
    assert _statuses(report)["auth"] == "skipped"


async def test_wrong_certificate_fails_at_tls(postfix_harness: Harness,
                                              harness_gateway: RunningGateway) -> None:
    report = await run_probes(_loaded(harness_gateway, postfix_harness, 30466, ssl=True),
                              DoctorOptions(connect_timeout=5, read_timeout=10))
    failure = report.first_failure
    assert failure is not None and failure.layer is Layer.TLS and failure.status is Status.FAILED
    assert "smtp.sendgrid.com" in failure.detail
