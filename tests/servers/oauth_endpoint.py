"""A local HTTPS OAuth2 token endpoint (``grant_type=refresh_token``) in a thread, for XOAUTH2 tests."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import trustme


@dataclass
class TokenEndpoint:
    """Issues ``tok-1``, ``tok-2``... for the right refresh token; records every request's form."""

    refresh_token: str
    client_id: str
    port: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    rotate_to: str | None = None  # answer with a new refresh token (like Microsoft)

    def answer(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        self.requests.append(form)
        if self.status != 200:
            return self.status, {"error": "temporarily_unavailable"}
        if form.get("grant_type") != "refresh_token" or form.get("client_id") != self.client_id:
            return 400, {"error": "invalid_request"}
        if form.get("refresh_token") != self.refresh_token:
            return 400, {"error": "invalid_grant", "error_description": "refresh token revoked"}
        body: dict[str, object] = {"access_token": f"tok-{len(self.requests)}", "token_type": "Bearer",
                                   "expires_in": 3600}
        if self.rotate_to:
            body["refresh_token"] = self.rotate_to
            self.refresh_token = self.rotate_to
        return 200, body


@contextmanager
def token_endpoint(ca: trustme.CA, name: str, endpoint: TokenEndpoint) -> Iterator[TokenEndpoint]:
    """Serve ``endpoint`` over HTTPS on 127.0.0.1 (certificate for ``name``); sets ``endpoint.port``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length).decode()
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            status, body = endpoint.answer(form)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    endpoint.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
