"""The bacnode daemon. Importing any part of it first installs the stand-ins that keep
py-libp2p's unused transports and services out of memory (:mod:`node.libp2p_imports`)."""

from . import libp2p_imports

libp2p_imports.install()
