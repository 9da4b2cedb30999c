"""The names the gateway and the mail service import from egressmail.networking exist and fit together."""

from __future__ import annotations

import inspect

import egressmail.networking as networking
from egressmail.errors import NetworkingError, NotFoundError


def test_every_exported_name_exists() -> None:
    for name in networking.__all__:
        assert hasattr(networking, name), name


def test_contract_signatures() -> None:
    params = inspect.signature(networking.decide).parameters
    assert [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY] == [
        "way_in", "listen_port", "host", "port"]
    assert list(inspect.signature(networking.NetworkStore.enable).parameters) == [
        "self", "program", "environment", "payload"]
    assert "pinned" in inspect.signature(networking.check_resolved_address).parameters
    assert {w.value for w in networking.WayIn} == {"port-forward", "http-connect", "http-forward"}


def test_error_families() -> None:
    assert issubclass(networking.InvalidNetworkingPayload, NetworkingError)
    assert issubclass(networking.InfrastructureExists, NetworkingError)
    assert issubclass(networking.InfrastructureInUse, NetworkingError)
    assert issubclass(networking.InfrastructureNotFound, NotFoundError)
    assert issubclass(networking.InfrastructureNotFound, NetworkingError)
    assert networking.InvalidNetworkingPayload("payload", "x").exit_code == 3
    assert networking.InfrastructureNotFound("x").exit_code == 2
