"""Bitswap 1.2.0 (with 1.1.0/1.0.0 fallbacks) on the node's libp2p host.

The wire messages are py-libp2p's bitswap protobuf. The engine is ours: py-libp2p's
``BitswapClient`` answers on the asker's own stream, while kubo (and the spec) send
replies on a stream the responder opens, and it logs every block at INFO. Here, as
in kubo, each peer gets one outbound stream for everything we send it (wants,
cancels, presences, blocks) and we read whatever arrives on inbound streams.

A fetch asks the peers that may hold a DAG whether they have its root (want-have),
then spreads want-blocks over those that do, a bounded window at a time. A block is
accepted only if it hashes to a CID we asked that peer for; a peer that sends
anything else is dropped from the fetch and its wants go to the others.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.bitswap.pb.bitswap_pb2 import Message as WireMessage
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from protocol.cid import DAG_PB, Cid, IpfsFormatError
from protocol.unixfs import Block, child_cids, decode_node

from .blockstore import Blockstore

log = logging.getLogger("bacnode.bitswap")

BITSWAP_120 = TProtocol("/ipfs/bitswap/1.2.0")
BITSWAP_110 = TProtocol("/ipfs/bitswap/1.1.0")
BITSWAP_100 = TProtocol("/ipfs/bitswap/1.0.0")
BITSWAP_LEGACY = TProtocol("/ipfs/bitswap")
PROTOCOLS = [BITSWAP_120, BITSWAP_110, BITSWAP_100, BITSWAP_LEGACY]

#: The spec's limit; kubo refuses larger messages.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Blocks per outgoing message stop being added past this size.
BATCH_BYTES = 1024 * 1024
MAX_BLOCK_BYTES = 2 * 1024 * 1024
#: Wants outstanding per peer and per fetch: bounds memory to about this many blocks.
WANTS_PER_PEER = 32
WANTS_PER_FETCH = 96
#: A want with no answer for this long is also asked of another provider.
WANT_RETRY_SECONDS = 10.0
#: How long the peers we know of have to say they hold a DAG's root before the DHT is
#: asked who does (at once when we know of none).
DHT_FALLBACK_SECONDS = 1.0
STREAM_IDLE_SECONDS = 120.0
DIAL_SECONDS = 10.0
#: Streams a peer may have open to us at once (kubo opens one per message it sends).
MAX_INBOUND_STREAMS_PER_PEER = 64
#: Served blocks queued per peer, beyond which its wants are refused (DontHave).
MAX_QUEUED_PER_PEER = 1024

GetBlock = Callable[[Cid], bytes | None]


class FetchError(Exception):
    """A DAG could not be fetched; the message says how far it got and why."""


@dataclass
class BitswapStats:
    blocks_served: int = 0
    bytes_served: int = 0
    blocks_received: int = 0
    bytes_received: int = 0
    blocks_rejected: int = 0
    duplicates: int = 0
    bad_messages: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "BlocksServed": self.blocks_served,
            "BytesServed": self.bytes_served,
            "BlocksReceived": self.blocks_received,
            "BytesReceived": self.bytes_received,
            "BlocksRejected": self.blocks_rejected,
            "DuplicateBlocks": self.duplicates,
            "BadMessages": dict(self.bad_messages),
        }


class _Outbox:
    """What we owe one peer, sent over our one outbound stream to it."""

    def __init__(self) -> None:
        self.entries: list[WireMessage.Wantlist.Entry] = []
        self.presences: list[tuple[bytes, int]] = []
        self.blocks: OrderedDict[bytes, Cid] = OrderedDict()  # multihash -> CID as asked
        self.wake = trio.Event()
        self.stream: Any = None
        self.protocol: str = ""

    def pending(self) -> bool:
        return bool(self.entries or self.presences or self.blocks)


class Bitswap:
    """Serves the node's blocks to any peer and fetches DAGs from connected peers."""

    def __init__(
        self, host: Any, store: Blockstore, *,
        route_to: Callable[[ID], Awaitable[None]] | None = None,
        find_providers: Callable[[str], Awaitable[list[ID]]] | None = None,
    ) -> None:
        self.host = host
        self._route_to = route_to
        self._find_providers = find_providers
        self.store = store
        self.stats = BitswapStats()
        self._outboxes: dict[ID, _Outbox] = {}
        self._inbound: Counter[ID] = Counter()
        self._fetches: set[_Fetch] = set()
        self._nursery: trio.Nursery | None = None

    async def run(
        self, *, task_status: trio.TaskStatus[Bitswap] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for protocol in PROTOCOLS:
                self.host.set_stream_handler(protocol, self._handle_stream)
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                for outbox in list(self._outboxes.values()):
                    if outbox.stream is not None:
                        with trio.CancelScope(shield=True), trio.move_on_after(1):
                            await _reset(outbox.stream)

    # -- receiving -----------------------------------------------------------

    async def _handle_stream(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        if self._inbound[peer] >= MAX_INBOUND_STREAMS_PER_PEER:
            self.stats.bad_messages["too many streams"] += 1
            await _reset(stream)
            return
        self._inbound[peer] += 1
        try:
            while True:
                with trio.fail_after(STREAM_IDLE_SECONDS):
                    raw = await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE_BYTES)
                message = WireMessage()
                try:
                    message.ParseFromString(raw)
                except Exception:
                    self.stats.bad_messages["unparsable"] += 1
                    raise
                await self._on_message(peer, message)
        except Exception as exc:
            log.debug("bitswap stream from %s ended: %r", peer, exc)
        finally:
            self._inbound[peer] -= 1
            if not self._inbound[peer]:
                del self._inbound[peer]
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await _reset(stream)

    async def _on_message(self, peer: ID, message: WireMessage) -> None:
        if message.HasField("wantlist"):
            await self._on_wantlist(peer, message.wantlist)
        received: list[tuple[bytes | None, bytes]] = [(None, data) for data in message.blocks]
        received += [(block.prefix, block.data) for block in message.payload]
        if received:
            await self._on_blocks(peer, received)
        for presence in message.blockPresences:
            try:
                cid = Cid.from_bytes(presence.cid)
            except IpfsFormatError:
                self.stats.bad_messages["bad presence CID"] += 1
                continue
            for fetch in list(self._fetches):
                fetch.on_presence(peer, cid, presence.type == WireMessage.Have)

    async def _on_wantlist(self, peer: ID, wantlist: Any) -> None:
        outbox = self._outbox(peer)
        if wantlist.full:
            outbox.blocks.clear()
        for entry in wantlist.entries:
            try:
                cid = Cid.from_bytes(entry.block)
            except IpfsFormatError:
                self.stats.bad_messages["bad want CID"] += 1
                continue
            if entry.cancel:
                outbox.blocks.pop(cid.multihash, None)
                continue
            have = await trio.to_thread.run_sync(self.store.has, cid)
            wants_block = entry.wantType == WireMessage.Wantlist.Block
            if have and wants_block and len(outbox.blocks) < MAX_QUEUED_PER_PEER:
                outbox.blocks[cid.multihash] = cid
            elif have and not wants_block:
                outbox.presences.append((bytes(cid), WireMessage.Have))
            elif entry.sendDontHave:
                outbox.presences.append((bytes(cid), WireMessage.DontHave))
        if outbox.pending():
            outbox.wake.set()

    async def _on_blocks(self, peer: ID, received: list[tuple[bytes | None, bytes]]) -> None:
        accepted: list[Block] = []
        for prefix, data in received:
            try:
                if len(data) > MAX_BLOCK_BYTES:
                    raise IpfsFormatError(f"block of {len(data)} bytes is over the limit")
                # 1.0.0 blocks carry no prefix: sha2-256 dag-pb v0 is all they can be.
                cid = Cid.from_prefix(prefix, data) if prefix else Cid.for_block(data)
            except IpfsFormatError as exc:
                self._reject(peer, str(exc))
                continue
            owners = [fetch for fetch in self._fetches if fetch.expects(cid)]
            if not owners:
                if any(fetch.recently_done(cid) for fetch in self._fetches):
                    self.stats.duplicates += 1
                else:
                    self._reject(peer, f"unrequested or altered block {cid}")
                continue
            self.stats.blocks_received += 1
            self.stats.bytes_received += len(data)
            accepted.append(Block(cid, data))
        if accepted:
            await trio.to_thread.run_sync(self.store.put_many, accepted)
            for block in accepted:
                for fetch in [f for f in self._fetches if f.expects(block.cid)]:
                    fetch.on_block(peer, block)

    def _reject(self, peer: ID, why: str) -> None:
        self.stats.blocks_rejected += 1
        log.warning("rejected a block from %s: %s", peer, why)
        for fetch in list(self._fetches):
            fetch.on_bad_peer(peer)

    # -- sending -------------------------------------------------------------

    def _outbox(self, peer: ID) -> _Outbox:
        outbox = self._outboxes.get(peer)
        if outbox is None:
            outbox = self._outboxes[peer] = _Outbox()
            if self._nursery is None:
                raise FetchError("bitswap is not running")
            self._nursery.start_soon(self._send_loop, peer, outbox)
        return outbox

    def send_wants(
        self, peer: ID, cids: Iterable[Cid], *, have_only: bool = False, cancel: bool = False
    ) -> None:
        outbox = self._outbox(peer)
        for cid in cids:
            entry = WireMessage.Wantlist.Entry(block=bytes(cid), priority=1, cancel=cancel)
            if not cancel:
                kinds = WireMessage.Wantlist
                entry.wantType = kinds.Have if have_only else kinds.Block
                entry.sendDontHave = True
            outbox.entries.append(entry)
        outbox.wake.set()

    async def _send_loop(self, peer: ID, outbox: _Outbox) -> None:
        try:
            while True:
                await outbox.wake.wait()
                outbox.wake = trio.Event()
                while outbox.pending():
                    message, blocks = await self._next_message(outbox)
                    await self._write(peer, outbox, message)
                    self.stats.blocks_served += blocks
        except Exception as exc:
            log.debug("bitswap sender to %s stopped: %r", peer, exc)
            for fetch in list(self._fetches):
                fetch.on_bad_peer(peer, quietly=True)
        finally:
            if self._outboxes.get(peer) is outbox:
                del self._outboxes[peer]
            if outbox.stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await _reset(outbox.stream)

    async def _next_message(self, outbox: _Outbox) -> tuple[WireMessage, int]:
        message = WireMessage()
        if outbox.entries:
            message.wantlist.entries.extend(outbox.entries)
            message.wantlist.full = False
            outbox.entries = []
        legacy = outbox.protocol in (BITSWAP_100, BITSWAP_LEGACY)
        if outbox.presences and not legacy:
            for cid_bytes, kind in outbox.presences:
                message.blockPresences.add(cid=cid_bytes, type=kind)
        outbox.presences = []
        size = blocks = 0
        while outbox.blocks and size < BATCH_BYTES:
            _, cid = outbox.blocks.popitem(last=False)
            data = await trio.to_thread.run_sync(self.store.get, cid)
            if data is None:
                if not legacy:
                    message.blockPresences.add(cid=bytes(cid), type=WireMessage.DontHave)
                continue
            if legacy:
                message.blocks.append(data)
            else:
                message.payload.add(prefix=cid.prefix, data=data)
            size += len(data)
            blocks += 1
            self.stats.bytes_served += len(data)
        return message, blocks

    async def _write(self, peer: ID, outbox: _Outbox, message: WireMessage) -> None:
        data = encode_varint_prefixed(message.SerializeToString())
        for attempt in (1, 2):
            if outbox.stream is None:
                with trio.fail_after(DIAL_SECONDS):
                    if self._route_to is not None:
                        await self._route_to(peer)
                    outbox.stream = await self.host.new_stream(peer, PROTOCOLS)
                outbox.protocol = str(outbox.stream.get_protocol())
            try:
                await outbox.stream.write(data)
                return
            except Exception:
                await _reset(outbox.stream)
                outbox.stream = None
                if attempt == 2:
                    raise

    # -- fetching ------------------------------------------------------------

    async def fetch_dag(
        self,
        root: Cid,
        peers: Iterable[ID],
        *,
        timeout: float,
        on_progress: Callable[[int, int], None] | None = None,
        max_bytes: int | None = None,
        on_root: Callable[[int], None] | None = None,
    ) -> int:
        """Fetch every block under ``root`` not already held; return the bytes fetched.

        ``on_root`` gets the DAG's total size from its root block before the rest is
        fetched, and may raise to stop (e.g. not enough disk).
        """
        fetch = _Fetch(self, root, [p for p in peers if p != self.host.get_id()])
        fetch.on_progress = on_progress
        fetch.on_root = on_root
        fetch.will_ask_dht = self._find_providers is not None
        self._fetches.add(fetch)
        failure: Exception | None = None
        try:
            with trio.move_on_after(timeout) as scope:
                async with trio.open_nursery() as nursery:
                    if self._find_providers is not None:
                        nursery.start_soon(self._ask_dht, fetch)
                    # Caught in the nursery's body and raised after it: out of it, the
                    # nursery would raise it inside an exception group, which the
                    # callers' ``except FetchError`` and ``except IpfsFormatError`` miss.
                    try:
                        await fetch.run()
                    except Exception as exc:
                        failure = exc
                    nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure
            if scope.cancelled_caught:
                raise FetchError(fetch.timeout_reason(timeout))
            return fetch.fetched_bytes
        finally:
            self._fetches.discard(fetch)
            fetch.cancel_all()


    async def _ask_dht(self, fetch: _Fetch) -> None:
        """Add the peers the DHT names as holding the root, unless a peer we knew of has
        said it holds it by then."""
        assert self._find_providers is not None
        if fetch.candidates:
            await trio.sleep(DHT_FALLBACK_SECONDS)
        if fetch.providers:
            return
        found = await self._find_providers(str(fetch.root))
        fetch.asked_dht = True
        me = self.host.get_id()
        new = [peer for peer in found if peer != me and peer not in fetch.candidates]
        fetch.found_in_dht = len(new)
        fetch.candidates.extend(new)
        for peer in new:
            fetch._send(peer, [fetch.root], have_only=True)
        fetch.wake.set()


class _Fetch:
    """One DAG fetch: which blocks are wanted from whom, and who has the root."""

    def __init__(self, bitswap: Bitswap, root: Cid, candidates: list[ID]) -> None:
        self.bitswap = bitswap
        self.root = root
        self.candidates = candidates
        self.providers: list[ID] = []
        self.said_no: set[ID] = set()
        self.bad: set[ID] = set()
        self.queue: list[Cid] = []
        self.outstanding: dict[bytes, tuple[Cid, set[ID], float]] = {}
        self.done: set[bytes] = set()
        self.fetched_bytes = 0
        self.total_bytes = 0
        self.wake = trio.Event()
        self.on_progress: Callable[[int, int], None] | None = None
        self.on_root: Callable[[int], None] | None = None
        self.failure: Exception | None = None
        self.asked_dht = False
        #: Whether the DHT will be asked who holds the root (set by ``fetch_dag``).
        self.will_ask_dht = False
        self.found_in_dht = 0

    # events from the engine (sync: they only record and wake the fetch)

    def expects(self, cid: Cid) -> bool:
        return cid.multihash in self.outstanding

    def recently_done(self, cid: Cid) -> bool:
        return cid.multihash in self.done

    def on_presence(self, peer: ID, cid: Cid, have: bool) -> None:
        if cid.multihash == self.root.multihash:
            if have and peer not in self.providers and peer not in self.bad:
                self.providers.append(peer)
            elif not have:
                self.said_no.add(peer)
        if not have and cid.multihash in self.outstanding:
            self.outstanding[cid.multihash][1].discard(peer)
        self.wake.set()

    def on_block(self, peer: ID, block: Block) -> None:
        self.outstanding.pop(block.cid.multihash, None)
        self.done.add(block.cid.multihash)
        self.fetched_bytes += len(block.data)
        if peer not in self.providers and peer not in self.bad:
            self.providers.append(peer)
        try:
            self._expand(block.cid, block.data)
        except Exception as exc:  # a verified block that is not UnixFS we can read
            self.failure = exc
        self.wake.set()

    def on_bad_peer(self, peer: ID, *, quietly: bool = False) -> None:
        if peer in self.bad:
            return
        if not quietly:
            self.bad.add(peer)
        if peer in self.providers:
            self.providers.remove(peer)
        for _, asked, _ in self.outstanding.values():
            asked.discard(peer)
        self.wake.set()

    # the fetch itself

    def _expand(self, cid: Cid, data: bytes) -> None:
        if cid.multihash == self.root.multihash and cid.codec == DAG_PB:
            self.total_bytes = _dag_size(cid, data)
            if self.on_root is not None:
                self.on_root(self.total_bytes)
        self.queue.extend(child_cids(cid, data) if cid.codec == DAG_PB else ())
        if self.on_progress is not None:
            self.on_progress(self.fetched_bytes, self.total_bytes)

    async def run(self) -> None:
        store = self.bitswap.store
        self.queue.append(self.root)
        asked_root = False
        while self.queue or self.outstanding:
            if self.failure is not None:
                raise self.failure
            # Blocks we already hold cost no round trip; walk through them.
            while self.queue and len(self.outstanding) < WANTS_PER_FETCH:
                cid = self.queue.pop()
                if cid.multihash in self.done or cid.multihash in self.outstanding:
                    continue
                data = await trio.to_thread.run_sync(store.get, cid)
                if data is not None:
                    self.done.add(cid.multihash)
                    self._expand(cid, data)
                else:
                    self.outstanding[cid.multihash] = (cid, set(), 0.0)
            if self.failure is not None:
                raise self.failure
            if self.outstanding and not asked_root:
                asked_root = True
                for peer in self.candidates:
                    self._send(peer, [self.root], have_only=True)
            self._assign()
            if self.outstanding and not self.candidates and (
                    self.asked_dht or not self.will_ask_dht):
                # Nobody to ask, and nobody will be (the DHT is asked once): waiting out
                # the timeout, a job's whole execution timeout when it stages, would
                # only hold up this answer.
                raise FetchError(self.timeout_reason(0))
            self.wake = trio.Event()
            if self.queue or self.outstanding:
                with trio.move_on_after(1.0):
                    await self.wake.wait()
        if self.failure is not None:
            raise self.failure

    def _assign(self) -> None:
        now = trio.current_time()
        load: Counter[ID] = Counter()
        for _, asked, _ in self.outstanding.values():
            load.update(asked)
        for key, (cid, asked, since) in list(self.outstanding.items()):
            live = [p for p in asked if p in self.providers]
            stale = now - since >= WANT_RETRY_SECONDS
            if live and not stale:
                continue
            choices = [p for p in self.providers if p not in asked and load[p] < WANTS_PER_PEER]
            if not choices and stale:
                # Everyone was asked and nothing came (a reply lost with a stream): ask again.
                choices = [p for p in self.providers if load[p] < WANTS_PER_PEER]
            if not choices:
                continue
            peer = min(choices, key=lambda p: load[p])
            load[peer] += 1
            asked.add(peer)
            self.outstanding[key] = (cid, asked, now)
            self._send(peer, [cid])

    def _send(self, peer: ID, cids: list[Cid], *, have_only: bool = False) -> None:
        try:
            self.bitswap.send_wants(peer, cids, have_only=have_only)
        except Exception as exc:
            log.debug("cannot ask %s: %r", peer, exc)

    def cancel_all(self) -> None:
        asked_peers: dict[ID, list[Cid]] = {}
        for cid, asked, _ in self.outstanding.values():
            for peer in asked:
                asked_peers.setdefault(peer, []).append(cid)
        for peer, cids in asked_peers.items():
            try:
                self.bitswap.send_wants(peer, cids, cancel=True)
            except Exception:
                pass

    def timeout_reason(self, timeout: float) -> str:
        if not self.done:
            dht = (f" ({self.found_in_dht} of them named by the DHT)" if self.asked_dht
                   else "")
            if not self.candidates:
                return (f"{self.root} not found: no peers to ask, and the DHT knows of no "
                        "holder" if self.asked_dht else
                        f"{self.root} not found: no peers to ask (is this node connected?)")
            if not self.providers:
                return (
                    f"{self.root} not found within {timeout:.0f}s: none of the "
                    f"{len(self.candidates)} peers asked{dht} has it"
                )
        return (
            f"fetching {self.root} timed out after {timeout:.0f}s with "
            f"{len(self.done)} blocks ({self.fetched_bytes} bytes) fetched and "
            f"{len(self.outstanding) + len(self.queue)} still wanted"
        )


def _dag_size(cid: Cid, data: bytes) -> int:
    node = decode_node(cid, data)
    return len(data) + sum(link.tsize for link in node.links)


async def _reset(stream: Any) -> None:
    try:
        await stream.reset()
    except Exception:
        pass
