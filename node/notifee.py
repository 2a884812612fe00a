"""A py-libp2p network notifee that ignores every event a subclass does not override.

py-libp2p's ``INotifee`` declares all six events abstract, so each of ours would otherwise
spell out the ones it does not care about.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import INotifee


class Notifee(INotifee):  # type: ignore[misc]
    async def connected(self, network: Any, conn: Any) -> None:
        pass

    async def disconnected(self, network: Any, conn: Any) -> None:
        pass

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass
