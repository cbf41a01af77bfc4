"""The dashboard's token gate: an ASGI middleware that lets a request through only with the token.

As in Jupyter, the token is printed once with the URL. Opening ``/?token=T`` once stores it in an
HttpOnly, SameSite=Strict cookie (named per port, so two dashboards on one host keep theirs apart) and
redirects to the same page without it, so the token does not stay in the address bar or the history;
scripts may send ``Authorization: token T`` instead. Anything else is answered 403 before it reaches
the application. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlencode

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FORBIDDEN = (b"This dashboard needs its token: open the URL that `hpo-slurm dashboard` printed, "
             b"with ?token=...\n")


class TokenGate:
    """Wraps ``app``; ``extra_headers`` go on the gate's own answers too."""

    def __init__(self, app: ASGIApp, token: str, cookie: str, extra_headers: Optional[Dict[str, str]] = None):
        if len(token) < 16:
            raise ValueError("a dashboard token needs at least 16 characters")
        self.app = app
        self.token = token
        self.cookie = cookie
        self.headers = [(k.lower().encode(), v.encode()) for k, v in (extra_headers or {}).items()]

    def _matches(self, candidate: Optional[str]) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the server's own start and stop: nothing to guard
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # websockets and anything else: never served
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        headers = dict(scope.get("headers") or [])
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = next((value for key, value in query if key == "token"), None)
        if self._matches(given):
            rest = urlencode([(key, value) for key, value in query if key != "token"])
            path = scope.get("raw_path") or scope.get("path", "/").encode("utf-8")  # as sent: still %-encoded
            location = path + (f"?{rest}".encode("latin-1", "replace") if rest else b"")
            await self._answer(send, 303, b"", [(b"location", location),
                                                (b"set-cookie", self._cookie_header())])
            return
        if self._matches(_cookie(headers, self.cookie)) or self._matches(_authorization(headers)):
            await self.app(scope, receive, send)
            return
        await self._answer(send, 403, FORBIDDEN, [(b"content-type", b"text/plain; charset=utf-8")])

    def _cookie_header(self) -> bytes:
        return f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()

    async def _answer(self, send: Send, status: int, body: bytes, headers: List[Tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, *self.headers, (b"cache-control", b"no-store"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _cookie(headers: Dict[bytes, bytes], name: str) -> Optional[str]:
    raw = headers.get(b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except CookieError:  # a malformed Cookie header is a request without the token, nothing more
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


def _authorization(headers: Dict[bytes, bytes]) -> Optional[str]:
    scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return value.strip() if scheme.lower() == "token" else None
