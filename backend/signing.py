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
from urllib.parse import urlencode


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
