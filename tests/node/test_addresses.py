"""Which addresses a node advertises (node/addresses.py)."""

from __future__ import annotations

import pytest

from node.addresses import advertised, is_public, on_public_network

ME = "12D3KooWGfF445wvpKQq23UZEKYTnAwmAAHB7QCiUhxX6p8cbWvC"
LISTENING = ["/ip4/127.0.0.1/tcp/1235", "/ip4/192.168.1.20/tcp/1235", "/ip4/10.0.0.5/tcp/1235",
             "/ip4/100.64.0.9/tcp/1235", "/ip6/fd00::5/tcp/1235", "/ip4/198.51.100.23/tcp/1235",
             "/ip6/2001:db8::1/tcp/1235", "/ip4/8.8.4.4/tcp/1235"]


@pytest.mark.parametrize(("address", "public"), [
    ("/ip4/127.0.0.1/tcp/1", False), ("/ip4/10.1.2.3/tcp/1", False),
    ("/ip4/172.16.0.1/tcp/1", False), ("/ip4/192.168.0.1/tcp/1", False),
    ("/ip4/100.64.0.1/tcp/1", False),  # carrier-grade NAT
    ("/ip4/169.254.1.1/tcp/1", False), ("/ip6/::1/tcp/1", False), ("/ip6/fe80::1/tcp/1", False),
    ("/ip6/fd12::1/tcp/1", False), ("/ip4/0.0.0.0/tcp/1", False),
    ("/ip4/8.8.4.4/tcp/1", True), ("/ip6/2606:4700::1111/tcp/1", True),
    ("/dns4/boot.example.org/tcp/1", True), ("/dns4/localhost/tcp/1", False),
    ("/dns/printer.local/tcp/1", False), ("not a multiaddr", False),
])
def test_what_counts_as_public(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_on_a_devnet_or_lan_every_listen_address_is_advertised() -> None:
    bootstrap = [f"/ip4/127.0.0.1/tcp/1236/p2p/{ME}", f"/ip4/192.168.1.2/tcp/1235/p2p/{ME}"]
    assert not on_public_network(bootstrap)
    assert advertised(LISTENING, peer_id=ME, bootstrap=bootstrap) == [
        f"{address}/p2p/{ME}" for address in LISTENING]


def test_on_a_public_network_only_public_addresses_are_advertised_unless_asked() -> None:
    bootstrap = [f"/dns4/boot.example.org/tcp/1235/p2p/{ME}"]
    assert on_public_network(bootstrap)
    assert advertised(LISTENING, peer_id=ME, bootstrap=bootstrap) == [
        f"/ip4/8.8.4.4/tcp/1235/p2p/{ME}"]  # the documentation ranges are not global either
    assert len(advertised(LISTENING, peer_id=ME, bootstrap=bootstrap,
                          announce_private=True)) == len(LISTENING)
    # Behind NAT with only private addresses: nothing to advertise (strangers cannot dial).
    assert advertised(LISTENING[:3], peer_id=ME, bootstrap=bootstrap) == []


def test_announced_addresses_replace_the_listen_addresses() -> None:
    announced = advertised(LISTENING, peer_id=ME, announce=["/dns4/node.example.org/tcp/4001",
                                                            f"/ip4/8.8.4.4/tcp/4001/p2p/{ME}"])
    assert announced == [f"/dns4/node.example.org/tcp/4001/p2p/{ME}",
                         f"/ip4/8.8.4.4/tcp/4001/p2p/{ME}"]
