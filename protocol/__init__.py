"""bacnode's wire formats and rules, with no I/O (sans-IO, in the style of h11).

Nothing in this package touches sockets, files, the clock or trio: callers pass
time and bytes in and get values or errors out. Allowed imports: the standard
library, msgpack, mmh3 and PyNaCl (libsodium).
"""

__version__ = "0.1.0"

#: The ``v`` field of every envelope; a receiver drops any other value.
PROTOCOL_VERSION = 1
#: Human form of the protocol, as it appears in topic names.
PROTOCOL_NAME = f"bacnode/{PROTOCOL_VERSION}"
