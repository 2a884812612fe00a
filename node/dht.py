"""bacnode's own Kademlia DHT: peer routing and provider records for the CIDs nodes hold.

It is py-libp2p 0.8's ``KadDHT`` on protocol ``/bacnode/kad/1.0.0``, so it never mixes
with the public IPFS DHT (``/ipfs/kad/1.0.0``). What had to be wrapped, found by
experiment on hosts built as ``node.mesh`` builds them:

- The protocol ID is the module constant ``libp2p.kad_dht.common.PROTOCOL_ID``, copied at
  import into four more modules; ``KadDHT(protocol_prefix=…)`` is stored and never used.
  ``use_bacnode_protocol`` renames it everywhere it is held (process-wide: a daemon runs
  one DHT), and ``check`` fails loudly if an upgrade adds another holder.
- A server adds every peer that opens a DHT stream to its routing table without checking
  that the peer serves the DHT itself, so nodes in client mode end up in tables and get
  queried in vain. ``BacnodeDHT.add_peer`` keeps identify's check.
- Nothing adds connected peers to the routing table: a DHT started before its first
  connection found nobody until its next refresh, ten minutes on. ``RoutingNotifee``
  offers each new connection once identify says it serves the DHT.
- A requester that closes its side normally makes the server's read raise ``StreamEOF``,
  which ``KadDHT`` takes for an error: a warning and a reset stream per request served.
  The read is wrapped to report a clean end of stream.
- ``find_providers`` returns a provider once per peer that knew it: ``providers`` merges.
- Every ten minutes a DHT refreshes its routing table: a lookup for itself and one per
  bucket, each dialling whoever answers, and those connections stay open. On a 100-node
  devnet, nodes went from ~9 connections to 28-55 from the first refresh on, every new
  connection a gossip peer too, and the machine stayed saturated (load average ~100),
  also with the refreshes spread over five minutes. ``BacnodeDHT`` refreshes once, as it
  starts; after that its table fills from connections (``RoutingNotifee``) and from the
  lookups a node makes to provide and find, and every node's address is in the
  membership table anyway. ``Mesh._trim_connections`` closes what lookups leave open.

- A provider record keeps every address its provider sent, and a server keeps records for
  any number of keys: at py-libp2p's rate of 10 ADD_PROVIDER a peer every 10 s, each up to
  4 MiB of addresses, kept for 48 hours, one peer could fill a node's memory in an hour.
  ``bound_providers`` keeps ``MAX_PROVIDER_ADDRESSES`` addresses a record and records for at
  most ``MAX_PROVIDER_KEYS`` keys (a new key past that is refused until records expire); a
  node's own records are always kept.

Provider answers are hints: whoever a lookup names is dialled by its peer ID, so a wrong
address costs a failed dial, never wrong bytes (bitswap checks every block's hash).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from .notifee import Notifee

log = logging.getLogger("bacnode.dht")

PROTOCOL_ID = TProtocol("/bacnode/kad/1.0.0")
#: Addresses kept for one provider of one key (go-libp2p's peerstore keeps a provider's
#: addresses apart; a node announces a few).
MAX_PROVIDER_ADDRESSES = 8
#: Keys with provider records from other nodes; a node's own records are always kept.
MAX_PROVIDER_KEYS = 20_000
_PUBLIC_IPFS_PROTOCOL = "/ipfs/kad/1.0.0"
#: How long a new connection's identify may take before the peer is left out of the
#: routing table (it still gets in through DHT traffic).
IDENTIFY_WAIT_SECONDS = 5.0
_applied = False


def use_bacnode_protocol() -> None:
    """Make every ``KadDHT`` in this process speak ``PROTOCOL_ID`` only; call before the
    first is created (its constructor registers the stream handler)."""
    global _applied
    if _applied:
        return
    import libp2p.kad_dht.common as common
    import libp2p.kad_dht.kad_dht as kad_dht
    import libp2p.kad_dht.peer_routing as peer_routing
    import libp2p.kad_dht.provider_store as provider_store
    import libp2p.kad_dht.value_store as value_store

    for module in (common, kad_dht, peer_routing, provider_store, value_store):
        module.PROTOCOL_ID = PROTOCOL_ID  # type: ignore[attr-defined]
    _read_end_of_stream_cleanly(kad_dht)
    check()
    _applied = True


def check() -> None:
    """Raise if a py-libp2p module still holds the public IPFS DHT's protocol ID."""
    for name, module in list(sys.modules.items()):
        if name.startswith("libp2p.kad_dht") and \
                getattr(module, "PROTOCOL_ID", None) == _PUBLIC_IPFS_PROTOCOL:
            raise RuntimeError(f"{name}.PROTOCOL_ID is still {_PUBLIC_IPFS_PROTOCOL}")


def _read_end_of_stream_cleanly(kad_dht: Any) -> None:
    from libp2p.io.exceptions import IncompleteReadError
    from libp2p.network.stream.exceptions import StreamEOF

    original = kad_dht.read_varint_prefixed_bytes_limited

    async def read(stream: Any, max_length: int) -> bytes:
        try:
            return await original(stream, max_length)
        except StreamEOF:
            raise IncompleteReadError("stream closed", expected_bytes=1,
                                      received_bytes=0) from None

    kad_dht.read_varint_prefixed_bytes_limited = read


def new_dht(host: Any, *, server: bool) -> Any:
    """A DHT on ``host``, created before ``host.run`` so that identify offers it."""
    from libp2p.kad_dht.kad_dht import DHTMode, KadDHT

    use_bacnode_protocol()
    class BacnodeDHT(KadDHT):
        refreshed = False

        async def refresh_routing_table(self) -> None:
            if not self.refreshed:  # once, as it starts: see the module's docstring
                self.refreshed = True
                await super().refresh_routing_table()

        async def add_peer(self, peer_id: ID, *, skip_server_mode_check: bool = False) -> bool:
            return bool(await self.routing_table.add_peer(peer_id))

    dht = BacnodeDHT(host, DHTMode.SERVER if server else DHTMode.CLIENT, enable_values=False)
    bound_providers(dht.provider_store, host.get_id())
    return dht


def bound_providers(store: Any, own_id: ID) -> None:
    """Keep what others announce to ``store`` within ``MAX_PROVIDER_ADDRESSES`` and
    ``MAX_PROVIDER_KEYS`` (looked up at each call)."""
    add = store.add_provider

    def add_provider(key: bytes, provider: PeerInfo) -> None:
        if provider.peer_id != own_id:
            if key not in store.providers and len(store.providers) >= MAX_PROVIDER_KEYS:
                store.cleanup_expired()
                if len(store.providers) >= MAX_PROVIDER_KEYS:
                    log.debug("provider record of %s for a new key refused: %d keys held",
                              provider.peer_id, len(store.providers))
                    return
            if len(provider.addrs) > MAX_PROVIDER_ADDRESSES:
                provider = PeerInfo(provider.peer_id, provider.addrs[:MAX_PROVIDER_ADDRESSES])
        add(key, provider)

    store.add_provider = add_provider


async def providers(dht: Any, cid: str, count: int = 20) -> list[PeerInfo]:
    """Who the DHT says holds ``cid``, each peer once with all its addresses."""
    merged: dict[ID, list[Any]] = {}
    for info in await dht.find_providers(cid, count):
        addresses = merged.setdefault(info.peer_id, [])
        addresses.extend(a for a in info.addrs if a not in addresses)
    return [PeerInfo(peer, addresses) for peer, addresses in merged.items()][:count]


class RoutingNotifee(Notifee):
    """Offers each new connection's peer to the routing table, once identify has said
    which protocols it speaks (only DHT servers belong there)."""

    def __init__(self, dht: Any) -> None:
        self.dht = dht
        self.nursery: trio.Nursery | None = None

    async def connected(self, network: Any, conn: Any) -> None:
        if self.nursery is not None:
            try:
                self.nursery.start_soon(self._add, conn.muxed_conn.peer_id)
            except RuntimeError:  # the node is stopping: its nursery takes no more tasks
                pass

    async def _add(self, peer: ID) -> None:
        store = self.dht.host.get_peerstore()

        def protocols() -> list[str]:
            try:
                return list(store.get_protocols(peer) or [])
            except Exception:  # unknown to the peerstore until identify answers
                return []

        with trio.move_on_after(IDENTIFY_WAIT_SECONDS):
            while not protocols():
                await trio.sleep(0.05)
        if PROTOCOL_ID not in protocols():
            return
        try:
            await self.dht.routing_table.add_peer(peer)
        except Exception as exc:  # a notifee must never raise into the swarm
            log.debug("routing table: cannot add %s: %r", peer, exc)
