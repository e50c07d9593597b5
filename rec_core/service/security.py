"""Who may talk to the service, and how much they may send.

Why a bind policy: the service answers with user histories and recommendations, so by default it
listens on loopback only, where only this machine reaches it. Listening on any other address needs
a bearer token (`REC_SERVICE_TOKEN`, from the environment, never the command line where `ps`
shows it): `check_bind` refuses to start without one, and `RequestGate` answers 401 to a request
without it. `/healthz` stays open so that load balancers and orchestrators can probe.

The gate also holds a second line behind the bind check: when the service runs without a token
(say `uvicorn --host 0.0.0.0` started by hand, which `check_bind` never saw), a connection that
arrived on a non-loopback address is refused all the same.

Body sizes: a request that declares a body larger than its route allows is refused here, with a
message naming the limit, before any of it is read; FastAPI's own `max_body_size` (set on each
route that reads a body) stops bodies that do not declare their length once they pass the limit.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import socket
from collections.abc import Mapping

TOKEN_ENV = "REC_SERVICE_TOKEN"
MIN_TOKEN_CHARS = 16  # shorter tokens are guessable; `python -c "import secrets; print(secrets.token_urlsafe())"`
OPEN_PATHS = frozenset({"/healthz"})


class BindRefused(RuntimeError):
    """The service may not listen where it was asked to, as configured."""


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address (an empty host means all interfaces)."""
    if not host:
        return False
    literal = _literal_is_loopback(host)
    if literal is not None:
        return literal
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


@functools.lru_cache(maxsize=64)
def _literal_is_loopback(host: str) -> bool | None:
    """Whether an IP address literal is loopback; None when `host` is a name. Cached because the gate
    asks it about the listening address on every request, and parsing costs more than the rest of it."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return None


def check_bind(host: str, token: str | None) -> None:
    """Raises `BindRefused` for a non-loopback `host` without a usable token."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise BindRefused(
            f"{TOKEN_ENV} has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe())")'
        )
    if not is_loopback(host) and not token:
        raise BindRefused(
            f"refusing to listen on '{host}' without a token: other machines could reach it. "
            f"Set {TOKEN_ENV} in the environment (clients then send 'Authorization: Bearer <token>'), "
            "or listen on 127.0.0.1"
        )


class RequestGate:
    """ASGI middleware: the bearer token check and the declared-body-size check, before any route runs."""

    def __init__(self, app, token: str | None, body_limits: Mapping[str, int], default_body_limit: int):
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.body_limits = dict(body_limits)  # path -> bytes, for routes allowed more than the default
        self.default_body_limit = default_body_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if scope["path"] not in OPEN_PATHS:
            refusal = self._refusal(scope, headers.get(b"authorization"))
            if refusal:
                return await send_json(send, 401, refusal, [(b"www-authenticate", b"Bearer")])
        declared = headers.get(b"content-length")
        limit = self.body_limits.get(scope["path"], self.default_body_limit)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await send_json(
                send, 413, f"the request body is {int(declared):,} bytes; this endpoint accepts at most {limit:,}"
            )
        await self.app(scope, receive, send)

    def _refusal(self, scope, authorization: bytes | None) -> str | None:
        if self.expected is None:
            server = scope.get("server")
            if server is None or is_loopback(server[0]):
                return None
            return (
                f"this service has no {TOKEN_ENV} configured, so it answers loopback connections only; "
                "restart it with a token to serve other machines"
            )
        if authorization is None:
            return "missing 'Authorization: Bearer <token>' header"
        if not hmac.compare_digest(authorization, self.expected):
            return "invalid bearer token"
        return None


async def send_json(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
