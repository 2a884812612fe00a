"""bacnode's decision core: what the requester and the compute node decide, with no I/O.

``RequesterCore`` and ``ComputeCore`` are state machines in the style of Dask's
scheduler: ``handle(event, now_ms) -> instructions``. They never read a clock,
a socket, a file or a random source; the time comes in with every event and new
IDs come in with the events that need them. Two interpreters carry the
instructions out: the daemon (``node.requester``, ``node.compute``: store, mesh,
executor) and the deterministic simulation (``tests.sim``: a virtual clock and a
seeded network with faults). Whatever must survive a crash is in an instruction
to persist, never only in a core's memory, and ``Restarted`` rebuilds a core
from what was persisted.

``tests/protocol/test_purity.py`` checks that importing this package pulls in
no I/O library.
"""

from .compute import ComputeCore
from .requester import RequesterCore

__all__ = ["ComputeCore", "RequesterCore"]
