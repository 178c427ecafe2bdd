"""Which addresses a webhook may be sent to: public ones only.

A worker POSTs to a callback URL from inside the deployment, where 127.0.0.1:6379 is Redis,
169.254.169.254 the cloud's metadata service and 10.x the database. So a callback URL's host is
resolved once, every address it resolves to must be public, and the worker connects to one of
those very addresses (``resolve_target``), never to the name again: a second resolution could
answer differently (DNS rebinding; DESIGN.md, "Security facts"). The API runs the same check
when a job is submitted (``check_callback_url``), so a bad URL is a 422, not a failed callback.

QUIRE_WEBHOOK_ALLOW_PRIVATE=true lifts the address rule (receivers on the operator's own
network, and the tests' loopback receivers); the name is still resolved once and pinned.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address

# The resolver; tests replace it so that no test needs (or sends) a DNS query.
getaddrinfo = socket.getaddrinfo

# Special-purpose IPv4 blocks that Python 3.11's ipaddress still calls global.
_SPECIAL_V4 = (
    (IPv4Network("100.64.0.0/10"), "shared (carrier-grade NAT)"),
    (IPv4Network("192.0.0.0/24"), "IETF protocol assignment"),
    (IPv4Network("192.88.99.0/24"), "6to4 relay"),
)
_IPV4_COMPATIBLE = IPv6Network("::/96")  # deprecated ::a.b.c.d
_NAT64 = (IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"))
_UNIQUE_LOCAL = IPv6Network("fc00::/7")


class TargetRefused(ValueError):
    """The callback URL's host is, or resolves to, an address Quire does not call."""


def non_public_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address ("loopback", ...), or None if it is."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = non_public_reason(embedded)
            return f"{reason}, inside an IPv6 address" if reason else None
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (isinstance(address, IPv6Address) and address in _UNIQUE_LOCAL, "unique-local"),
        (isinstance(address, IPv6Address) and address.is_site_local, "site-local"),
    )
    for matched, reason in checks:
        if matched:
            return reason
    if isinstance(address, IPv4Address):
        for network, reason in _SPECIAL_V4:
            if address in network:
                return reason
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-public"
    return None


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries and routes to: mapped, compatible, 6to4, NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are themselves
        return IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in network for network in _NAT64):
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host names without DNS: an IPv6 or dotted-quad literal, or one of the
    legacy IPv4 spellings that resolvers and HTTP clients still accept (0x7f000001,
    2130706433, 0177.0.0.1, 127.1: inet_aton's forms)."""
    try:
        return ip_address(host)
    except ValueError:
        pass
    if not host or not all(char.isalnum() or char == "." for char in host):
        return None
    try:
        return IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


@dataclass(frozen=True)
class Target:
    """A callback URL's host, resolved once: connect to ``addresses``, in this order."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def _host_and_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("must be an absolute http or https URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("has an invalid port") from None
    return parts.hostname, port


def resolve_target(url: str, allow_private: bool) -> Target:
    """Resolve the URL's host once and check every address it resolves to.

    Raises TargetRefused when one of them is not public (all of them must be: an attacker's
    name may answer a public and a private address, and the client picks), and
    ``socket.gaierror`` when the name does not resolve."""
    host, port = _host_and_port(url)
    literal = literal_address(host)
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        found: dict[IPAddress, None] = {}  # in the resolver's order, without repeats
        for family, _, _, _, sockaddr in getaddrinfo(host, port, type=socket.SOCK_STREAM):
            if family in (socket.AF_INET, socket.AF_INET6):
                found[ip_address(str(sockaddr[0]).partition("%")[0])] = None
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no IP address")
        addresses = tuple(found)
    if not allow_private:
        for address in addresses:
            reason = non_public_reason(address)
            if reason is not None:
                named = host if literal is not None else f"{host} (resolved to {address})"
                raise TargetRefused(
                    f"the host {named} is not a public address ({reason}); callbacks go to "
                    "public addresses only"
                )
    return Target(host, port, addresses)


def check_callback_url(url: str, allow_private: bool) -> None:
    """The submission-time check: raises TargetRefused for a URL no callback could be sent to.

    A name that does not resolve now is accepted: DNS may be down for a moment, and each
    attempt checks again (an unresolvable name reaches nothing)."""
    try:
        resolve_target(url, allow_private)
    except (socket.gaierror, UnicodeError):
        return
