"""Which webhook URLs we may call: public http(s) hosts only (an SSRF guard).

A webhook URL is chosen by a client and called by our servers, from inside our network. Without
this guard a client could make us POST to the cloud metadata service, to PostgreSQL's host, or to
anything else only our network can reach. The host is resolved and every address it resolves to
must be globally routable; the delivery connects to the address that was checked (no second DNS
look-up an attacker could answer differently) and never follows redirects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURL(ValueError):
    """The URL is not one we will call; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the address to connect to."""

    url: str
    host: str
    address: str


def parse(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or UnsafeURL naming what is wrong."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("must be an http or https URL")
    if not parts.hostname:
        raise UnsafeURL("has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("must not carry credentials")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def forbidden(address: IPAddress) -> bool:
    """Loopback, private, link-local (cloud metadata lives there), shared, reserved, multicast…"""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return forbidden(address.ipv4_mapped)
    return not address.is_global or address.is_multicast


async def resolve(url: str, *, allow_private: bool) -> Target:
    """Check `url` and pick the address to call; UnsafeURL if any address is off limits."""
    _, host, port = parse(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeURL(f"host {host!r} does not resolve ({exc.strerror or exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise UnsafeURL(f"host {host!r} does not resolve")
    # Every address, not just the first: DNS may hand out a public and a private one in turn.
    if not allow_private and (bad := next((a for a in addresses if forbidden(a)), None)) is not None:
        raise UnsafeURL(f"host {host!r} resolves to {bad}, a loopback, private or link-local address")
    return Target(url, host, str(addresses[0]))
