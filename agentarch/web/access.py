"""Who may use the web UI, and from where: the Host a request names, the server's token, and the page a write came from.

One middleware (`Guard`) in front of every route holds the rules, in this order:

1. **Host.** A request whose `Host` header is not one this server answers to (`Hosts`: the bound address,
   localhost, 127.0.0.1 and [::1] with the port, and what `--allow-host` adds) is refused (400). A page on
   `attacker.example` whose name the attacker re-points at 127.0.0.1 (DNS rebinding) is same-origin with this server
   in the browser's eyes, so only the Host header tells its requests apart.
2. **Token.** With a token (`agentarch serve` refuses to bind anything but loopback without one), every request
   carries it: `?token=` once (remembered in an HttpOnly cookie, then the address is reloaded without it, so it
   stays out of history and Referer), the cookie, or `Authorization: Bearer`. Otherwise 401.
3. **Writes.** Every request that is not GET, HEAD or OPTIONS (reviews are decided and candidates flagged only by
   POST) must come from this server's own pages: a browser's `Sec-Fetch-Site` must say same-origin and its `Origin`
   must be this server (else 403), and the form must carry the CSRF token of the page it was on (else 403). A
   request with the bearer token is a script, not a browser page, and skips these two checks: no other site can make
   a browser send that header.

The CSRF token is `HMAC(server secret, id)`, where the id is a random value kept in a cookie: a page on another
origin can neither read a page of this server (it would need the token) nor compute one for a cookie it planted
(cookies are shared by every port of a host, so a page on 127.0.0.1:other could plant one), and a token that leaks
with a saved page is useless without that browser's cookie. The secret is new each start, so a page open across a
restart answers 403 "reload the page".

Its own module because every rule is about who asks, none is a page, and one middleware sees every route, the
static files and the error pages included, so a route added later is guarded without doing anything.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentarch.errors import UsageError

TOKEN_COOKIE = "agentarch_token"
CSRF_COOKIE = "agentarch_csrf"
CSRF_FIELD = "csrf"
"""The hidden form field, or the `X-CSRF-Token` header, that carries a page's CSRF token."""
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 2_000_000
"""The largest request body read: a review form carrying the longest code a page offers to edit
(`rendering.CODE_SHOWN` characters, each up to 9 bytes once URL-encoded) fits; a 50 MB body is refused unread."""
SECURITY_HEADERS = (
    # Framed by another site, a review page could be clicked through an overlay (clickjacking): the click would be
    # the person's own, same-origin, with the right CSRF token. These refuse to be framed anywhere.
    ("x-frame-options", "DENY"),
    ("content-security-policy", "frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
)

_DIGITS = re.compile(r"[0-9]+")
_CSRF_ID = re.compile(r"[A-Za-z0-9_-]{20,64}")
_HOST = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?")


def split_host(value: str) -> tuple[str, int | None] | None:
    """`name`, `name:port`, `[v6]` or `[v6]:port` (a Host header, an `--allow-host`) as (lowercase host, port);
    a bare IPv6 address is bracketed; None for anything else (a scheme, a path, a user, a space)."""
    value = value.strip()
    try:
        return f"[{ipaddress.IPv6Address(value)}]", None  # "::1" as one would type it
    except ValueError:
        pass
    found = _HOST.fullmatch(value)
    if found is None:
        return None
    host = found["host"].lower().rstrip(".")
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1])}]"
        except ValueError:
            return None
    port = found["port"]
    if port is not None and not 0 < int(port) < 65536:
        return None
    return host, None if port is None else int(port)


def is_loopback(host: str) -> bool:
    """Whether binding `host` serves only this machine: localhost, 127.0.0.0/8 or ::1."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Hosts:
    """The Host headers a server answers to: (host, port) pairs, where a port of None takes any port.

    An `--allow-host` without a port takes any port (the name a reverse proxy forwards, on 80 or 443); the loopback
    names and the bound address take only the server's port.
    """

    allowed: frozenset[tuple[str, int | None]]

    @classmethod
    def loopback(cls, port: int | None = None) -> Hosts:
        """localhost, 127.0.0.1 and [::1] on `port` (any port when None: an app not served by `serve`, e.g. a test's
        client or a benchmark's)."""
        return cls(frozenset((name, port) for name in LOOPBACK_NAMES))

    @classmethod
    def of(cls, bound: str, port: int, extra: Iterable[str] = ()) -> Hosts:
        """What `agentarch serve --host bound --port port --allow-host ...` answers to."""
        allowed = set(cls.loopback(port).allowed)
        for value, is_bound in [(bound, True), *((e, False) for e in extra)]:
            parsed = split_host(value)
            if parsed is None:
                raise UsageError(f"{value!r} is not a host name or address, optionally with :PORT (e.g. archive.lan)")
            host, given = parsed
            allowed.add((host, port if is_bound else given))
        return cls(frozenset(allowed))

    def allows(self, header: str | None, default_port: int) -> bool:
        parsed = split_host(header or "")
        if parsed is None:
            return False
        host, port = parsed
        return (host, None) in self.allowed or (host, default_port if port is None else port) in self.allowed

    def describe(self) -> str:
        return ", ".join(sorted(host if port is None else f"{host}:{port}" for host, port in self.allowed))


def csrf_token(secret: bytes, csrf_id: str) -> str:
    return hmac.new(secret, csrf_id.encode(), hashlib.sha256).hexdigest()


def _matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


def _refuse(status: int, message: str, **headers: str) -> PlainTextResponse:
    return PlainTextResponse(f"{status}: {message}\n", status_code=status, headers=headers or None)


def _cookie(name: str, value: str, samesite: str) -> str:
    cookie: SimpleCookie = SimpleCookie()
    cookie[name] = value
    cookie[name].update({"httponly": True, "samesite": samesite, "path": "/"})
    return cookie[name].OutputString()


def _foreign_origin(request: Request) -> str | None:
    """Why a write did not come from this server's own pages, by what the browser says of it; None when it did or the
    client says nothing (a script: the CSRF token still decides)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"the browser says it came from another site (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    ours = _netloc(request.headers.get("host", ""))
    if origin == "null" or _netloc(urlsplit(origin).netloc) != ours:
        return f"it came from a page at {origin}, not from this server ({ours})"
    return None


def _netloc(value: str) -> str:
    value = value.lower()
    for default in (":80", ":443"):
        value = value.removesuffix(default)
    return value


def _form_field(body: bytes, content_type: str, name: str) -> str | None:
    """A field of a URL-encoded form body; None for another encoding (this server's forms send none)."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return None
    values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get(name)
    return values[0] if values else None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes (the rest is not read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then waits on the client as the original would."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class Guard:
    """The rules above, as ASGI middleware; `scope["state"]["csrf"]` carries the page's CSRF token to its forms."""

    def __init__(self, app: ASGIApp, hosts: Hosts, token: str | None = None, secret: bytes | None = None) -> None:
        self.app = app
        self.hosts = hosts
        self.token = token or None  # an empty token would let anyone in with `?token=`
        self.secret = secret or secrets.token_bytes(32)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; there are no websocket routes
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal, cookies = self._check(request)
        if refusal is not None:
            await self._with_headers(refusal, cookies)(scope, receive, send)
            return
        csrf_id = request.cookies.get(CSRF_COOKIE, "")
        if not _CSRF_ID.fullmatch(csrf_id):
            csrf_id = secrets.token_urlsafe(24)
            cookies.append(_cookie(CSRF_COOKIE, csrf_id, "Lax"))  # not a credential: Lax keeps it on links in
        scope.setdefault("state", {})["csrf"] = csrf_token(self.secret, csrf_id)

        if request.method not in SAFE_METHODS and not self._bearer_ok(request):
            why = _foreign_origin(request)
            if why is not None:
                await self._write_refused(
                    f"this request would change the archive, but {why}", cookies, scope, receive, send
                )
                return
            length = request.headers.get("content-length", "")
            too_long = _DIGITS.fullmatch(length) is not None and int(length) > MAX_FORM_BYTES
            body = None if too_long else await _read_body(receive, MAX_FORM_BYTES)
            if body is None:
                response = _refuse(413, f"a form here is at most {MAX_FORM_BYTES:,} bytes")
                await self._with_headers(response, cookies)(scope, receive, send)
                return
            given = request.headers.get("x-csrf-token") or _form_field(
                body, request.headers.get("content-type", ""), CSRF_FIELD
            )
            if not _matches(given, scope["state"]["csrf"]):
                why = (
                    "it carries no CSRF token (it was not sent by one of this server's pages)"
                    if not given
                    else "its CSRF token is not this page's (the server restarted, or cookies were cleared)"
                )
                await self._write_refused(f"this form was refused: {why}", cookies, scope, receive, send)
                return
            receive = _replay(body, receive)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                self._add_headers(headers, cookies)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _check(self, request: Request) -> tuple[Response | None, list[str]]:
        """The Host and token rules: (a response that refuses or redirects, or None; cookies to set)."""
        # request.url is built from the Host header, and a malformed one ("[::1") would make it raise: scope only
        scheme_port = 443 if request.scope.get("scheme") == "https" else 80
        if not self.hosts.allows(request.headers.get("host"), scheme_port):
            host = (request.headers.get("host") or "(none)")[:100]
            return _refuse(
                400,
                f"this server does not answer to the host {host!r}. Open it at the address `agentarch serve` "
                "printed, or start it with `--allow-host NAME` for the name you opened it by.",
            ), []
        if self.token is None:
            return None, []
        from_query = _matches(request.query_params.get("token"), self.token)
        if not (
            from_query
            or _matches(_bearer(request), self.token)
            or _matches(request.cookies.get(TOKEN_COOKIE), self.token)
        ):
            return _refuse(
                401,
                "this agentarch server needs its token. Open the address `agentarch serve` printed "
                "(…/?token=…), or send the header 'Authorization: Bearer <token>'.",
                **{"WWW-Authenticate": "Bearer"},
            ), []
        if from_query and request.method in ("GET", "HEAD"):
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            clean = request.scope["path"] + (f"?{rest}" if rest else "")
            return RedirectResponse(clean, status_code=303), [_cookie(TOKEN_COOKIE, self.token, "Strict")]
        return None, []

    def _bearer_ok(self, request: Request) -> bool:
        return self.token is not None and _matches(_bearer(request), self.token)

    async def _write_refused(
        self, message: str, cookies: list[str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = _refuse(
            403,
            f"{message}. Decisions and flags are taken only on this server's own pages: open the review queue "
            "here, reload it, and decide there.",
        )
        await self._with_headers(response, cookies)(scope, receive, send)

    def _with_headers(self, response: Response, cookies: list[str]) -> Response:
        self._add_headers(response.headers, cookies)
        return response

    @staticmethod
    def _add_headers(headers: Any, cookies: list[str]) -> None:
        for name, value in SECURITY_HEADERS:
            headers[name] = value
        for cookie in cookies:
            headers.append("set-cookie", cookie)
