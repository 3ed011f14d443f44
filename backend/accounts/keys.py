"""API keys and webhook secrets: how they are made, recognised and stored.

A key is `gj_` + 32 random base62 characters (190 bits) + a 6-character base62 CRC32 of
them, the shape GitHub gives its tokens: a typo fails the checksum before any database
look-up, and a secret scanner can match `gj_[0-9A-Za-z]{38}` with few false positives.

Only SHA-256 of the key is stored. A slow password hash (bcrypt, argon2) exists to make
guessing a low-entropy password expensive; 190 random bits cannot be guessed whatever the
hash, so a fast one costs nothing in safety, keeps each look-up to microseconds, and lets
the database find a key by an index on its hash.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import zlib

PREFIX = "gj_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_CHARS = 32
_CHECKSUM_CHARS = 6  # 62**6 > 2**32: any CRC32 fits
KEY_LENGTH = len(PREFIX) + _RANDOM_CHARS + _CHECKSUM_CHARS
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), _CHECKSUM_CHARS)


def new_key() -> str:
    random_part = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    return PREFIX + random_part + _checksum(random_part)


def well_formed(key: str) -> bool:
    """True when `key` has our shape and its checksum matches: worth a database look-up."""
    if len(key) != KEY_LENGTH or not key.startswith(PREFIX):
        return False
    body = key[len(PREFIX) :]
    if not all(char in _ALPHABET for char in body):
        return False
    random_part, checksum = body[:_RANDOM_CHARS], body[_RANDOM_CHARS:]
    return secrets.compare_digest(_checksum(random_part), checksum)


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_hint(key: str) -> str:
    """What `keys list` shows so a person can tell keys apart; useless to an attacker."""
    return f"{key[: len(PREFIX) + 4]}…{key[-4:]}"


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
