"""Who is calling: API keys checked once per request, before any route runs.

Authentication is a middleware rather than a per-route dependency so that a route added
later (uploads, chat, the OpenAI facade) is protected without remembering to ask for it:
only the public paths below are reachable without a key when AUTH_REQUIRED=true.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.accounts import ANONYMOUS, Account
from backend.accounts.keys import key_hash, well_formed
from backend.accounts.repository import AccountRepository
from backend.config import Settings
from backend.errors import PROBLEM_JSON, Problem
from backend.signing import UrlSigner, is_signed, verify_query

# Probes, docs and the web page's own files: nothing in them belongs to an account.
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc"})
PUBLIC_PATHS |= {"/openapi.json", "/favicon.ico"}
PUBLIC_PREFIXES = ("/static/",)
# URLs whose own expiring signature is the credential (checked by their route), as an S3
# presigned URL's is: a local upload's content URL.
SIGNED_PATHS = re.compile(r"^/uploads/[^/]+/content$")

# How long a process trusts what it learnt about a key: a revoked key stops working
# within this many seconds on every replica, and a busy key costs one query per window.
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_ENTRIES = 10_000


class Authenticator:
    """Key -> account, with a short per-process cache (unknown keys are cached too)."""

    def __init__(self, repo: AccountRepository, ttl: float = KEY_CACHE_SECONDS) -> None:
        self.repo = repo
        self.ttl = ttl
        # Keyed by the key's hash, so the process never keeps keys it was shown.
        self._cache: dict[bytes, tuple[Account | None, float]] = {}

    async def account(self, key: str) -> Account | None:
        """The live account of a well-formed key; None when unknown or revoked."""
        digest = key_hash(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        found = await self.repo.by_key_hash(digest)
        self._cache.pop(digest, None)
        if len(self._cache) >= KEY_CACHE_ENTRIES:
            del self._cache[next(iter(self._cache))]  # the oldest entry: dicts keep insertion order
        self._cache[digest] = (found, now + self.ttl)
        return found


def unauthorized(code: str, detail: str) -> Problem:
    challenge = 'Bearer realm="generation-jobs"'
    if code != "api_key_missing":
        challenge += ', error="invalid_token"'  # RFC 6750 §3.1
    return Problem(401, code, "Unauthorized", detail, headers={"WWW-Authenticate": challenge})


def bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer` header; "" when the header has another shape."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or SIGNED_PATHS.match(path) is not None


class AuthMiddleware:
    """Puts the caller's account in `request.state.account`, or answers 401.

    A request without a key may carry a URL signature instead (`expires`, `signature`: the
    app's file URLs when auth is required, local upload URLs): a valid one opens exactly the
    signed method and path and sets `request.state.signed_url`; a wrong or expired one is 403.

    It also adds the headers a dependency left in `request.state.response_headers`
    (the rate limiter's), whatever kind of response the route returned.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.required = settings.auth_required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Our own copy: a server may hand every request the same lifespan state dict.
        state: dict[str, Any] = {**scope.get("state", {}), "account": ANONYMOUS, "signed_url": False}
        scope["state"] = state
        if not is_public(scope["path"]):
            try:
                state["account"] = await self._account(scope)
            except Problem as problem:
                await _answer(problem, scope, receive, send)
                return
        extra: list[tuple[bytes, bytes]] = []
        state["response_headers"] = extra

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _account(self, scope: Scope) -> Account:
        token = bearer_token(scope)
        account = None
        if token and well_formed(token):
            authenticator: Authenticator = scope["app"].state.authenticator
            account = await authenticator.account(token)
        if account is not None:
            return account
        if not self.required:
            # As local OpenAI-compatible servers do: SDKs insist on sending some key.
            return ANONYMOUS
        if token is None:
            query = scope.get("query_string", b"").decode("latin-1")
            if is_signed(query):
                return _signed(scope, query)
            raise unauthorized("api_key_missing", "send your API key as `Authorization: Bearer gj_…`")
        if not token or not well_formed(token):
            raise unauthorized("api_key_malformed", "the Authorization header does not hold a gj_… API key")
        raise unauthorized("api_key_invalid", "this API key is unknown or has been revoked")


def _signed(scope: Scope, query: str) -> Account:
    """A URL the app signed (a file, a local upload) opens that method and path without a key."""
    signer: UrlSigner = scope["app"].state.signer
    code = verify_query(signer, scope["method"], scope["path"], query)
    if code == "url_expired":
        raise Problem(403, code, "URL expired", "this signed URL has expired; fetch the job again for a fresh one")
    if code is not None:
        raise Problem(403, code, "Invalid signature", "this URL's signature does not match it; use the URL as given")
    scope["state"]["signed_url"] = True
    return ANONYMOUS


async def _answer(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(problem.body(), problem.status, problem.headers, media_type=PROBLEM_JSON)
    await response(scope, receive, send)


def anonymous_exposure(settings: Settings) -> str | None:
    """Why the service must not start, or None: anonymous access offered beyond this machine."""
    if settings.auth_required or settings.allow_anonymous or _loopback(settings.host):
        return None
    return (
        f"HOST={settings.host} is reachable from other machines but AUTH_REQUIRED=false would let anyone"
        " use the API anonymously; set AUTH_REQUIRED=true, or ALLOW_ANONYMOUS=true if that is intended"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
