"""The wraps of py-libp2p in ``node.libp2p_tuning`` keep its behaviour but for what they say."""

from __future__ import annotations

from libp2p.network.health.ping_probe import ConnectionPingResult

from node.libp2p_tuning import PING_FAILURES_TO_CLOSE, _tolerate_late_pings


class _Connection:
    """Stands for a connection: the wrap only keys its count on it."""


async def test_a_connection_is_given_up_only_after_several_late_pings_in_a_row():
    outcomes: list[bool] = []

    async def ping(monitor: object, conn: object) -> ConnectionPingResult:
        return ConnectionPingResult(success=outcomes.pop(0), rtt_ms=1.0)

    tolerant = _tolerate_late_pings(ping)
    busy, other = _Connection(), _Connection()

    async def probe(conn: _Connection, success: bool) -> ConnectionPingResult:
        outcomes.append(success)
        return await tolerant(None, conn)

    # Late pings before the last of a row are skipped probes: the monitor neither scores
    # nor closes the connection for them.
    for _ in range(PING_FAILURES_TO_CLOSE - 1):
        assert (await probe(busy, False)).skipped
    # One that answers starts the count again ...
    assert (await probe(busy, True)).success
    for _ in range(PING_FAILURES_TO_CLOSE - 1):
        assert (await probe(busy, False)).skipped
    # ... and another connection's failures are its own.
    assert (await probe(other, False)).skipped
    # The last of a row is reported as it was: the monitor closes the connection.
    failed = await probe(busy, False)
    assert not failed.success and not failed.skipped
