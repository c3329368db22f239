"""Which network addresses http_fetch may connect to, decided after DNS resolution.

Only globally routable unicast addresses pass. Refused: loopback, RFC 1918 private,
link-local (169.254/16, including the 169.254.169.254 cloud metadata service), CGNAT
(100.64/10), multicast, unspecified, reserved and documentation ranges, and their IPv6
equivalents (::1, fc00::/7, fe80::/10, ff00::/8) — also when an IPv4 address hides inside an
IPv6 one (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible, 6to4 2002::/16, NAT64 64:ff9b::/96,
Teredo). Legacy numeric IPv4 spellings (``2130706433``, ``0x7f.1``, ``017700000001``), which
``inet_aton`` would map onto an address, are refused outright.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> addresses the name resolves to.
Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]

_BLOCKED_V4 = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
    )
]
_BLOCKED_V6 = [
    ipaddress.ip_network(n)
    for n in (
        "::/128",
        "::1/128",
        "::/96",  # IPv4-compatible (deprecated)
        "::ffff:0:0/96",  # IPv4-mapped
        "64:ff9b::/96",  # NAT64
        "64:ff9b:1::/48",
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments (Teredo 2001::/32 among them)
        "2001:db8::/32",
        "2002::/16",  # 6to4
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
]
_LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


class AddressRefused(Exception):
    """The destination is not a public address (raised before any connection is made)."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, for the transition formats that carry one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = int(address)
    if address in ipaddress.ip_network("64:ff9b::/96") or address in ipaddress.ip_network("::/96"):
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` may not be contacted, or None when it is a public unicast address."""
    if allow_loopback and any(address in net for net in _LOOPBACK):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return f"{address} has a zone (scoped addresses are link-local)"
        if address.is_loopback or address.is_unspecified:
            return f"{address} is not a public address"
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = refusal_reason(inner)
            if reason is not None:
                return f"{address} embeds {inner}: {reason}"
        if any(address in net for net in _BLOCKED_V6):
            return f"{address} is not a public address"
    elif any(address in net for net in _BLOCKED_V4):
        label = (
            "the cloud metadata address"
            if str(address) == "169.254.169.254"
            else ("not a public address")
        )
        return f"{address} is {label}"
    if not address.is_global or address.is_multicast:
        return f"{address} is not a public address"
    return None


def check_addresses(addresses: Iterable[IPAddress], *, host: str, allow_loopback: bool) -> None:
    """Refuse when ANY address is not public (a name mixing public and private is refused)."""
    found = list(addresses)
    if not found:
        raise AddressRefused(f"{host} did not resolve to any address")
    for address in found:
        reason = refusal_reason(address, allow_loopback=allow_loopback)
        if reason is None:
            continue
        if ip_literal(host) == address:
            raise AddressRefused(reason)
        raise AddressRefused(f"{host} resolves to {address}: {reason}")


def ip_literal(host: str) -> IPAddress | None:
    """The address when ``host`` is a canonical IP literal (``[v6]`` brackets allowed)."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_legacy_ipv4(host: str) -> bool:
    """True for numeric spellings that inet_aton accepts but dotted-quad parsing does not.

    ``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``, ``127.1`` all mean 127.0.0.1 to the C
    library; a policy that only parses dotted quads would miss them.
    """
    if ip_literal(host) is not None:
        return False
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Resolve with the system resolver (getaddrinfo in a thread)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0])
        if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3]:
            text = f"{text.split('%')[0]}%{sockaddr[3]}"
        address = ipaddress.ip_address(text)
        if address not in addresses:
            addresses.append(address)
    return addresses
