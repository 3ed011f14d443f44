"""Expiring HMAC signatures for the app's own URLs (local uploads; file URLs when auth is on).

A signed URL carries `expires` (Unix seconds) and `signature`, an HMAC-SHA256 over the
method, the path and the expiry, so a URL signed for one object or verb opens no other.
Replicas that share SIGNING_SECRET accept each other's URLs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import parse_qs, urlencode

import asyncpg


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def random(cls) -> UrlSigner:
        return cls(secrets.token_bytes(32))

    def _digest(self, method: str, path: str, expires: int) -> str:
        message = f"{method.upper()}\n{path}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def query(self, method: str, path: str, expires: int) -> str:
        """The query string (without '?') that makes `method path` valid until `expires`."""
        return urlencode({"expires": expires, "signature": self._digest(method, path, expires)})

    def verify(self, method: str, path: str, expires: str | None, signature: str | None) -> bool:
        if not expires or not signature or not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(self._digest(method, path, int(expires)), signature)


# Replicas that were given no SIGNING_SECRET agree on this one: the first to start makes it.
_SIGNING_KEY_SQL = """
WITH made AS (
    INSERT INTO app_secrets (name, value) VALUES ('url_signing', $1) ON CONFLICT (name) DO NOTHING RETURNING value
)
SELECT value FROM made UNION ALL SELECT value FROM app_secrets WHERE name = 'url_signing'
"""


async def shared_secret(pool: asyncpg.Pool) -> bytes:
    """The URL-signing secret kept in the database, made on first use."""
    for _ in range(3):
        # A replica racing us may commit its secret after our snapshot: then both halves of
        # the statement come back empty, and the next attempt reads the winner's.
        value: str | None = await pool.fetchval(_SIGNING_KEY_SQL, secrets.token_urlsafe(32))
        if value is not None:
            return value.encode()
    raise RuntimeError("could not read or create the URL-signing secret in app_secrets")


def verify_query(signer: UrlSigner, method: str, path: str, query: str) -> str | None:
    """Check a request's own signature; None when it is valid, else the problem's code."""
    params = parse_qs(query)
    expires, signature = params.get("expires", [""])[0], params.get("signature", [""])[0]
    if expires.isdigit() and int(expires) < time.time():
        return "url_expired"
    # A HEAD is a GET without the body: a URL signed for GET opens both.
    if signer.verify("GET" if method == "HEAD" else method, path, expires, signature):
        return None
    return "url_signature_invalid"


def is_signed(query: str) -> bool:
    return "signature=" in query and "expires=" in query
