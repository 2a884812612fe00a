"""Which of a node's addresses go into its heartbeats: pure, so it is tested alone.

On a public network (one whose bootstrap peers are reached by public addresses or DNS
names) a node never advertises loopback or private addresses unless asked: strangers can
reach none of them, and they tell everyone what the node's LAN looks like. On a LAN or
devnet (bootstrap peers on private or loopback addresses, or none) it advertises where it
listens. ``--announce-addr`` replaces all of that with what the operator says (an address
a port forward or a load balancer makes public).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: The protocols that name a host rather than give its address.
DNS_PROTOCOLS = ("dns", "dns4", "dns6", "dnsaddr")
_LOCAL_NAMES = ("localhost",)


def host_of(address: str) -> tuple[str, str, str] | None:
    """A multiaddr's host part and the rest: ``("ip4", "10.0.0.1", "/tcp/1235/p2p/…")``;
    None when it does not start with one."""
    parts = address.split("/")
    if len(parts) < 3 or parts[0] or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2], "/" + "/".join(parts[3:]) if len(parts) > 3 else ""


def is_public(address: str) -> bool:
    """Whether strangers on the internet could dial ``address``: a globally routable IP,
    or a DNS name other than localhost (and not a ``.local`` mDNS name)."""
    host = host_of(address)
    if host is None:
        return False
    kind, value, _ = host
    if kind in DNS_PROTOCOLS:
        name = value.lower().rstrip(".")
        return name not in _LOCAL_NAMES and not name.endswith((".localhost", ".local"))
    if kind in ("ip4", "ip6"):
        try:
            return ipaddress.ip_address(value).is_global
        except ValueError:
            return False
    return False


def on_public_network(bootstrap: Iterable[str]) -> bool:
    """Whether a node with these bootstrap peers is on a public network."""
    return any(is_public(address) for address in bootstrap)


def advertised(listening: Iterable[str], *, peer_id: str, announce: Iterable[str] = (),
               bootstrap: Iterable[str] = (), announce_private: bool = False) -> list[str]:
    """The addresses to put in heartbeats, each ending in ``/p2p/<peer_id>``."""
    suffix = f"/p2p/{peer_id}"
    chosen = list(announce)
    if not chosen:
        chosen = list(listening)
        if on_public_network(bootstrap) and not announce_private:
            chosen = [address for address in chosen if is_public(address)]
    return [address if address.endswith(suffix) else address + suffix for address in chosen]
