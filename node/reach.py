"""Reaching nodes behind NAT: AutoNAT, circuit relay v2 and hole punching (DCUtR).

Every node:
- answers AutoNAT dial-back requests, and asks a few peers to dial it back, so it learns
  whether others can reach it (``Reach.status``: unknown, public or private);
- can dial a relayed address (``/…/p2p/<relay>/p2p-circuit/p2p/<node>``) and accept a
  connection a relay brings it;
- upgrades a relayed connection to a direct one by hole punching where the NATs allow it.

A node that finds itself private reserves a slot on up to ``RELAYS_WANTED`` relays among
the peers it is connected to, and advertises its relayed addresses in its heartbeats
instead of addresses nobody can dial. A public node started with ``--relay-service``
relays for others, within ``RELAY_LIMITS``.

py-libp2p 0.8.1 ships all of this; what had to be wrapped, found by experiment across
real MASQUERADE NATs in network namespaces (tests/integration/test_nat.py):

- ``Swarm.dial_peer`` drops every ``/p2p-circuit`` address ("this node has no relay
  transport") whether or not one is registered. bacnode always registers one, so the
  filter is turned off in the swarm module.
- ``CircuitV2Transport.dial`` returns an upgraded connection where the swarm expects a raw
  one, and the TCP transport also claims circuit addresses (and, tried first, dials the
  relay expecting the destination). ``_RelayTransport`` returns the raw circuit and sorts
  before TCP.
- The AutoNAT server's dial-back uses ``host.connect``, which returns at once because the
  asker is connected (it just opened the request): every asker was told it was public.
  ``_DialBackAutoNAT`` dials each address on a fresh connection and closes it.
- With one connection per peer, the swarm closes the older of two connections to a peer
  (it spares one younger than 20 s): a dial-back made both ends close the connection the
  request came over, and the answer with it, and then the dial-back's was closed too, so
  every recheck cut a node off from the peers it asked. Both ends keep every connection
  to the other while a dial-back is under way (``DIAL_BACK_TAG``).
- ``host.get_addrs()`` never includes relayed addresses, so identify does not announce
  them: bacnode puts them in its signed heartbeats itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.host.autonat import AutoNATService
from libp2p.host.autonat.autonat import AutoNATStatus
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from .notifee import Notifee

log = logging.getLogger("bacnode.reach")

#: What a relay gives each circuit, and how many it keeps. A circuit carries bids, results
#: and blocks between two nodes until hole punching replaces it; gossip never needs one
#: (both ends dial out to public peers).
RELAY_LIMITS = RelayLimits(duration=3600, data=1 << 30, max_circuit_conns=64,
                           max_reservations=128)
RELAYS_WANTED = 2
#: AutoNAT: peers asked at once, how long one dial-back may take, and how often it is
#: asked again (sooner while the answer is unknown).
PEERS_ASKED = 3
DIAL_BACK_SECONDS = 5.0
RECHECK_SECONDS = 300.0
UNKNOWN_RECHECK_SECONDS = 10.0
#: How often a private node checks that its relay reservations still stand.
RESERVATION_CHECK_SECONDS = 30.0
#: A hole punch first tries the peer's announced addresses this long (py-libp2p's 10 s
#: mostly waits on private addresses that cannot answer).
HOLE_PUNCH_DIAL_SECONDS = 3
STATUS_NAMES = {AutoNATStatus.UNKNOWN: "unknown", AutoNATStatus.PUBLIC: "public",
                AutoNATStatus.PRIVATE: "private"}

_applied = False


def _dial_relayed_addresses() -> None:
    global _applied
    if not _applied:
        import libp2p.network.swarm as swarm

        swarm.is_relay_address = lambda address: False  # type: ignore[attr-defined]
        _applied = True


class _RelayTransport(CircuitV2Transport):  # type: ignore[misc]
    def listen_order(self) -> int:
        return -1

    async def dial(self, maddr: multiaddr.Multiaddr) -> Any:  # type: ignore[override]
        relay_address, destination = self.parse_circuit_ma(maddr)
        relay = ID.from_base58(relay_address.get_peer_id())
        return await self.dial_peer_info(PeerInfo(destination, [maddr]),
                                         relay_info=PeerInfo(relay, [relay_address]))


#: While a dial-back is under way, both ends keep every connection to the other: the swarm
#: allows one per peer and would close the one the request came over.
DIAL_BACK_TAG = "bacnode-autonat-dial-back"


class _DialBackAutoNAT(AutoNATService):  # type: ignore[misc]
    async def _try_dial(self, peer_id: ID, addrs: list[bytes]) -> bytes | None:
        network = self.host.get_network()
        network.protect(peer_id, DIAL_BACK_TAG)
        try:
            for raw in addrs:
                conn = None
                try:
                    with trio.fail_after(DIAL_BACK_SECONDS):
                        conn = await network.dial_addr(multiaddr.Multiaddr(raw), peer_id)
                    return bytes(raw)
                except Exception:  # trio.TooSlowError included: not dialable from here
                    continue
                finally:
                    if conn is not None:
                        with trio.move_on_after(2):
                            await conn.close()
            return None
        finally:
            network.unprotect(peer_id, DIAL_BACK_TAG)


class _CountedRelay(CircuitV2Protocol):  # type: ignore[misc]
    """The relay service, counting the circuits it opened (for /agent/mesh)."""

    circuits_opened = 0

    async def _handle_connect(self, stream: Any, msg: Any) -> None:
        self.circuits_opened += 1
        await super()._handle_connect(stream, msg)


class _RecordedHolePunches(DCUtRProtocol):  # type: ignore[misc]
    """DCUtR, remembering how each hole punch it started ended."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}
        #: Set once a connection through a relay opens: before, there is nothing to punch.
        self.relayed_connection_opened = trio.Event()

    async def _auto_drive_loop(self) -> None:
        # py-libp2p's loop looks through every connection for relayed ones every 2 s from
        # the start; a node that never had one (most nodes) need not wake for it.
        await self.relayed_connection_opened.wait()
        await super()._auto_drive_loop()

    async def initiate_hole_punch(self, peer_id: ID) -> bool:
        ok = bool(await super().initiate_hole_punch(peer_id))
        self.outcomes[peer_id.to_base58()] = "direct" if ok else "failed"
        return ok


def is_relayed(conn: Any) -> bool:
    try:
        return any("/p2p-circuit" in str(a) for a in conn.get_transport_addresses())
    except Exception:
        return False


class _RelayedConnections(Notifee):
    """Calls ``opened`` when a connection through a relay opens."""

    def __init__(self, opened: Callable[[], None]) -> None:
        self._opened = opened

    async def connected(self, network: Any, conn: Any) -> None:
        if is_relayed(conn):
            self._opened()


class Reach:
    """AutoNAT, relay and hole punching for one host; run with ``await nursery.start``."""

    def __init__(self, host: Any, *, relay_service: bool) -> None:
        _dial_relayed_addresses()
        self.host = host
        self.relay_service = relay_service
        self.circuit = _CountedRelay(host, limits=RELAY_LIMITS, allow_hop=relay_service)
        # STOP only: with CLIENT, py-libp2p reserves a slot on the relay before every dial.
        self.transport = _RelayTransport(host, self.circuit,
                                         RelayConfig(roles=RelayRole.STOP, limits=RELAY_LIMITS))
        host.get_network().transport_manager.add_transport(self.transport)
        self.autonat = _DialBackAutoNAT(host, serve=True, confirmations=1)
        self.dcutr = _RecordedHolePunches(host, dial_timeout=HOLE_PUNCH_DIAL_SECONDS)
        host.get_network().register_notifee(
            _RelayedConnections(self.dcutr.relayed_connection_opened.set))
        self.status = AutoNATStatus.UNKNOWN
        #: Relays holding a slot for us, and our address through each.
        self.relayed: dict[ID, multiaddr.Multiaddr] = {}
        self._changed = trio.Event()

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, "unknown")

    def relayed_addresses(self) -> list[str]:
        return [str(address) for address in self.relayed.values()]

    def stats(self) -> dict[str, Any]:
        """For /agent/mesh: what AutoNAT found, our relayed addresses, the hole punches we
        started (peer: direct or failed) and, on a relay, its reservations and circuits."""
        stats: dict[str, Any] = {"Reachability": self.status_name,
                                 "RelayedAddresses": self.relayed_addresses(),
                                 "HolePunches": dict(self.dcutr.outcomes),
                                 "RelayService": self.relay_service}
        if self.relay_service:
            stats["Relaying"] = {
                "Reservations": len(self.circuit.resource_manager._reservations),
                "OpenCircuits": len(self.circuit._active_relays),
                "CircuitsOpened": self.circuit.circuits_opened}
        return stats

    async def changed(self) -> None:
        """Returns when the status or the relayed addresses change."""
        await self._changed.wait()

    def _note_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with background_trio_service(self.circuit), \
                background_trio_service(self.dcutr), trio.open_nursery() as nursery:
            await self.circuit.event_started.wait()
            task_status.started()
            nursery.start_soon(self._check_reachability)
            nursery.start_soon(self._keep_reservations, nursery)

    # -- AutoNAT ---------------------------------------------------------------

    def _candidates(self) -> list[bytes]:
        """Where others might dial us: each address a peer saw us at, with our listen port
        (a NAT that keeps ports maps it), and our listen addresses. The ports are the bound
        ones: a node told to listen on port 0 is dialled where the system put it."""
        listening = [address for address in self.host.get_addrs()
                     if "/p2p-circuit" not in str(address) and "/tcp/" in str(address)]
        ports = list(dict.fromkeys(a.value_for_protocol("tcp") for a in listening))
        found: list[multiaddr.Multiaddr] = []
        observer = getattr(self.host, "_observed_addr_manager", None)
        observed = list(observer.addrs(min_observers=1)) if observer is not None else []
        for address in [*observed, *listening]:
            text = str(address)
            if "/p2p-circuit" in text or "/tcp/" not in text:
                continue
            head = text.split("/tcp/")[0]
            for port in ports:
                candidate = multiaddr.Multiaddr(f"{head}/tcp/{port}")
                if candidate not in found:
                    found.append(candidate)
        return [address.to_bytes() for address in found]

    def _directly_connected(self) -> list[ID]:
        """Peers with a direct connection: AutoNAT servers refuse requests that come
        through a relay, and a relay is reached directly."""
        network = self.host.get_network()
        return [peer for peer, conns in list(network.connections.items())
                if any(not is_relayed(c) for c in (conns if isinstance(conns, list)
                                                  else [conns]))]

    async def _check_reachability(self) -> None:
        while True:
            answers = await self._ask_for_dial_backs(self._directly_connected()[:PEERS_ASKED])
            status = self.status
            if answers:
                status = (AutoNATStatus.PUBLIC if 2 * answers.count(True) >= len(answers)
                          else AutoNATStatus.PRIVATE)
            if status != self.status:
                log.info("reachability: %s (dial-backs: %d of %d succeeded)",
                         STATUS_NAMES[status], answers.count(True), len(answers))
                self.status = status
                self._note_change()
            await trio.sleep(UNKNOWN_RECHECK_SECONDS if self.status == AutoNATStatus.UNKNOWN
                             else RECHECK_SECONDS)

    async def _ask_for_dial_backs(self, servers: list[ID]) -> list[bool]:
        """Whether each server that answered could dial us back."""
        answers: list[bool] = []
        candidates = self._candidates()

        async def ask(server: ID) -> None:
            network = self.host.get_network()
            network.protect(server, DIAL_BACK_TAG)
            try:
                status, _ = await self.autonat.query_server(
                    server, addrs=candidates, timeout=2 * DIAL_BACK_SECONDS + 5)
            except Exception as exc:
                log.debug("AutoNAT: %s did not answer: %r", server, exc)
                return
            finally:
                network.unprotect(server, DIAL_BACK_TAG)
            answers.append(status == 0)

        if candidates:
            async with trio.open_nursery() as nursery:
                for server in servers:
                    nursery.start_soon(ask, server)
        return answers

    # -- relay reservations ----------------------------------------------------

    def _relays(self) -> list[ID]:
        store = self.host.get_peerstore()
        relays = []
        for peer in self._directly_connected():
            try:
                protocols = store.get_protocols(peer) or []
            except Exception:
                continue
            if HOP_PROTOCOL in protocols:
                relays.append(peer)
        return relays

    async def _keep_reservations(self, nursery: trio.Nursery) -> None:
        while True:
            if self.status == AutoNATStatus.PRIVATE:
                connected = set(self._directly_connected())
                lost = [relay for relay in self.relayed if relay not in connected]
                for relay in lost:
                    del self.relayed[relay]
                for relay in self._relays():
                    if len(self.relayed) >= RELAYS_WANTED:
                        break
                    if relay not in self.relayed:
                        await self._reserve(relay, nursery)
                if lost:
                    self._note_change()
            elif self.relayed:
                self.relayed.clear()
                self._note_change()
            with trio.move_on_after(RESERVATION_CHECK_SECONDS):
                await self.changed()

    async def _reserve(self, relay: ID, nursery: trio.Nursery) -> None:
        try:
            with trio.fail_after(10):
                stream = await self.host.new_stream(relay, [HOP_PROTOCOL])
                try:
                    reserved = await self.transport.reserve(stream, relay, nursery)
                finally:
                    await stream.close()
        except Exception as exc:
            log.info("relay %s: no reservation (%r)", relay, exc)
            return
        if not reserved:
            log.info("relay %s refused a reservation", relay)
            return
        direct = _dialled_address(self.host, relay)
        if direct is None:
            return
        self.relayed[relay] = multiaddr.Multiaddr(
            f"{direct}/p2p/{relay}/p2p-circuit/p2p/{self.host.get_id()}")
        log.info("reachable through relay %s: %s", relay, self.relayed[relay])
        self._note_change()


def _dialled_address(host: Any, relay: ID) -> multiaddr.Multiaddr | None:
    """Where our direct connection to ``relay`` goes: the address others reach it at too
    (relays are public, and we dialled it)."""
    conns = host.get_network().connections.get(relay) or []
    for conn in conns if isinstance(conns, list) else [conns]:
        if not is_relayed(conn):
            for address in conn.get_transport_addresses():
                if "/p2p/" not in str(address):
                    return address
    return None
