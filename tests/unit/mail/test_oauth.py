"""Token caching and expiry with a fake clock, against a real local HTTPS endpoint."""

from __future__ import annotations

import pytest
import trustme

from egressmail.mail.errors import PermanentDeliveryError, TransientDeliveryError
from egressmail.mail.oauth import EXPIRY_MARGIN_S, OAuthTokenProvider
from egressmail.mail.settings import parse_oauth_settings
from tests.servers.oauth_endpoint import TokenEndpoint, token_endpoint


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def provider(endpoint: TokenEndpoint, cafile: str, clock: list[float]) -> OAuthTokenProvider:
    oauth = parse_oauth_settings({"refreshUrl": f"https://127.0.0.1:{endpoint.port}/token?tenant=x",
                                  "clientId": "c", "refreshToken": "rt-1"})
    return OAuthTokenProvider(oauth, cafile=cafile, clock=lambda: clock[0])


async def test_cached_until_shortly_before_expiry_and_rotation(ca: trustme.CA, tmp_path) -> None:
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    endpoint = TokenEndpoint(refresh_token="rt-1", client_id="c", rotate_to="rt-2")
    clock = [1000.0]
    with token_endpoint(ca, "127.0.0.1", endpoint):
        p = provider(endpoint, str(cafile), clock)
        assert (await p.token()).reveal() == "tok-1"
        clock[0] += 3600 - EXPIRY_MARGIN_S - 1
        assert (await p.token()).reveal() == "tok-1"  # still cached
        clock[0] += 2
        assert (await p.token()).reveal() == "tok-2"  # renewed with the rotated refresh token
        assert (await p.token(fresh=True)).reveal() == "tok-3"
    assert [r["refresh_token"] for r in endpoint.requests] == ["rt-1", "rt-2", "rt-2"]
    assert "rt-1" not in repr(p) and "tenant" not in repr(p)


async def test_endpoint_errors(ca: trustme.CA, tmp_path) -> None:
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    endpoint = TokenEndpoint(refresh_token="rt-1", client_id="c", status=503)
    with token_endpoint(ca, "127.0.0.1", endpoint):
        with pytest.raises(TransientDeliveryError, match="HTTP 503"):
            await provider(endpoint, str(cafile), [0.0]).token()
    # a certificate from another CA: refused, named as a transport problem, retried later
    with token_endpoint(trustme.CA(), "127.0.0.1", TokenEndpoint("rt-1", "c")) as other:
        with pytest.raises(TransientDeliveryError, match="certificate"):
            await provider(other, str(cafile), [0.0]).token()
    with token_endpoint(ca, "127.0.0.1", TokenEndpoint("another", "c")) as wrong:
        with pytest.raises(PermanentDeliveryError, match="invalid_grant") as info:
            await provider(wrong, str(cafile), [0.0]).token()
    assert info.value.stage == "oauth" and "rt-1" not in str(info.value)


async def test_credentials_in_the_proxy_or_endpoint_url_never_appear() -> None:
    # A corporate proxy (egressmail.oauth.proxy) or an endpoint may carry user:password in its URL.
    oauth = parse_oauth_settings({"refreshUrl": "https://tenant:url-pw-9@127.0.0.1:1/token",
                                  "clientId": "c", "refreshToken": "rt-1"})
    p = OAuthTokenProvider(oauth, proxy="http://proxyuser:proxy-pw-9@127.0.0.1:1", timeout=3)
    with pytest.raises(TransientDeliveryError) as info:  # nothing listens on port 1
        await p.token()
    for shown in (str(info.value), repr(p)):
        assert "url-pw-9" not in shown and "proxy-pw-9" not in shown
        assert "127.0.0.1:1" in shown  # still says where
