"""Stand-ins for the parts of py-libp2p 0.8 a node does not use until it is asked to.

``import libp2p`` imports every transport and service py-libp2p ships, whether a host uses
it or not: QUIC (aioquic, pyOpenSSL), WebSocket (trio-websocket), AutoTLS (httpx,
requests), SECIO (fastecdsa), mDNS (zeroconf) and multiaddr's DNS resolver (dnspython).
A bacnode host speaks TCP with Noise and yamux, so those modules were about 20 MiB of the
106 MiB its imports took, for nothing (13 MiB of an idle daemon's 115: docker-py loads
``requests`` anyway). The TLS transport, RSA and secp256k1 keys (pycryptodome, coincurve,
cffi and pycparser), private networks, py-libp2p's bitswap (bacnode has its own) and its
persistent peerstores were another 4 MiB (85 to 81 MiB for ``import node.daemon``).
py-libp2p's Noise transport and ``cryptography`` (which it and py-libp2p's key-file and
AutoTLS code import at the top of their modules) were 9-10 MiB of an idle daemon's 73: a
bacnode host secures its connections with :mod:`node.noise` on libsodium instead.

:func:`install` puts an import hook in front of the modules of each such *family* that
pull in those libraries. While a family is unused, its modules are stand-ins that hold
only the names the rest of py-libp2p imports from them:

- a class stays a stand-in until it is constructed or one of its attributes is read; that
  loads the whole family for real and hands over to the real class, so a feature that is
  turned on (mDNS, on by default for ``bacnode serve``) behaves exactly as py-libp2p's own.
  Until then ``isinstance`` and ``issubclass`` against it are false, as they must be:
  no instance of a class that was never loaded can exist;
- a function loads the family when it is called, and so does a method listed in
  :class:`ClassWithMethods` (read at import into a table, called only for some inputs);
- a name a stand-in module does not hold loads its family on first use; a package's
  stand-in keeps the real package's path, so its modules outside the family (the DHT's
  ``libp2p.bitswap.cid``) are imported for real;
- ``DNSResolver`` is constructed by every swarm but used only to dial a ``/dns`` address,
  so its instances wait for their first attribute to construct the real resolver; in the
  same way, the X25519 key pair every swarm makes for py-libp2p's Noise transport is made
  only if that transport is used (a bacnode host brings its own, ``node.noise``);
- ``is_quic_multiaddr`` answers for addresses without ``/quic`` itself (the real one is
  false for those) and asks the real one otherwise;
- a constant is the real value (``tests/node/test_libp2p_imports.py`` checks each name
  against the real module, so a py-libp2p upgrade that changes them fails there).

The hook must be installed before py-libp2p is first imported; ``node/__init__.py`` does
that. A family whose modules were already imported stays as it is.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CLASS = "class"
FUNCTION = "function"
#: A class constructed eagerly whose instances are used only for some inputs.
LAZY_INSTANCE = "lazy instance"
#: A function called eagerly whose result is used only for some inputs.
LAZY_RESULT = "lazy result"


@dataclass(frozen=True)
class ClassWithMethods:
    """A class some of whose methods are read, not called, at import (py-libp2p's key
    deserializer tables hold ``RSAPublicKey.from_bytes``): each stays a stand-in function
    until it is called."""

    methods: tuple[str, ...]


@dataclass
class Family:
    """Modules loaded together: a real module imports its siblings, never their stand-ins."""

    name: str
    #: module -> name -> CLASS, FUNCTION, LAZY_INSTANCE or a constant's value
    modules: dict[str, dict[str, Any]]
    loaded: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


FAMILIES = (
    Family("QUIC transport", {
        "libp2p.transport.quic.transport": {"QUICTransport": CLASS},
        "libp2p.transport.quic.stream": {"QUICStream": CLASS},
        "libp2p.transport.quic.utils": {"is_quic_multiaddr": FUNCTION},
    }),
    Family("WebSocket transport", {
        "libp2p.transport.websocket.connection": {"P2PWebSocketConnection": CLASS},
        "libp2p.transport.websocket.listener": {
            "WebsocketListener": CLASS, "WebsocketListenerConfig": CLASS},
        "libp2p.transport.websocket.autotls": {
            "AutoTLSConfig": CLASS, "AutoTLSManager": CLASS, "initialize_autotls": FUNCTION},
    }),
    Family("mDNS", {
        "libp2p.discovery.mdns.mdns": {"MDNSDiscovery": CLASS, "create_mdns_discovery": FUNCTION},
        "libp2p.discovery.mdns.broadcaster": {"PeerBroadcaster": CLASS},
        "libp2p.discovery.mdns.listener": {"PeerListener": CLASS},
    }),
    Family("AutoTLS", {
        "libp2p.security.tls.autotls.acme": {"ACMEClient": CLASS, "compute_b36_peer_id": FUNCTION},
        "libp2p.security.tls.autotls.broker": {"BrokerClient": CLASS},
    }),
    Family("SECIO", {
        "libp2p.security.secio.transport": {"ID": "/secio/1.0.0", "Transport": CLASS},
    }),
    Family("DNS resolver", {
        "multiaddr.resolvers.dns": {"DNSADDR_TXT_PREFIX": "dnsaddr=", "DNSResolver": LAZY_INSTANCE},
    }),
    Family("TLS security", {
        "libp2p.security.tls.transport": {
            "PROTOCOL_ID": "/tls/1.0.0", "IdentityConfig": CLASS, "TLSTransport": CLASS,
            "create_tls_transport": FUNCTION},
        "libp2p.security.tls.io": {"TLSReadWriter": CLASS},
        "libp2p.security.tls.certificate": {
            "ALPN_PROTOCOL": "libp2p", "SignedKey": CLASS, "create_cert_template": FUNCTION,
            "generate_certificate": FUNCTION, "pub_key_from_cert_chain": FUNCTION,
            "verify_certificate_chain": FUNCTION},
    }),
    # A peer's RSA or secp256k1 identity key (bacnode's are Ed25519) loads them.
    Family("RSA and secp256k1 keys", {
        "libp2p.crypto.rsa": {
            "RSAPrivateKey": ClassWithMethods(("from_bytes",)),
            "RSAPublicKey": ClassWithMethods(("from_bytes",)),
            "create_new_key_pair": FUNCTION},
        "libp2p.crypto.secp256k1": {
            "Secp256k1PrivateKey": ClassWithMethods(("from_bytes",)),
            "Secp256k1PublicKey": ClassWithMethods(("from_bytes",)),
            "create_new_key_pair": FUNCTION},
    }),
    # Only a host given a swarm key (``--swarm-key``: a private network) protects its
    # connections with it.
    Family("private network", {
        "libp2p.security.pnet.protector": {"new_protected_conn": FUNCTION},
    }),
    # The DHT takes only bitswap's CID parser (libp2p.bitswap.cid, not stood in for).
    Family("bitswap", {"libp2p.bitswap": {}}),
    # A bacnode host secures its connections with node.noise (libsodium); py-libp2p's own
    # Noise transport is built on noiseprotocol, whose backend is ``cryptography``.
    Family("py-libp2p's Noise transport", {
        "libp2p.security.noise.transport": {"PROTOCOL_ID": "/noise", "Transport": CLASS},
        "libp2p.crypto.x25519": {
            "X25519PrivateKey": CLASS, "X25519PublicKey": CLASS,
            "create_new_key_pair": LAZY_RESULT},
    }),
    # ``cryptography`` (a Rust extension with its own OpenSSL: 9-10 MiB of an idle daemon's
    # RSS) for what py-libp2p does with it at the top of its modules: read and write PEM key
    # files, and read AutoTLS certificates. A bacnode node does neither.
    Family("cryptography", {
        "cryptography.hazmat.primitives.asymmetric.ed25519": {},
        "cryptography.hazmat.primitives.serialization": {},
        "cryptography.x509": {},
        "cryptography.x509.oid": {"ExtensionOID": CLASS},
    }),
    Family("persistent peerstores", {
        "libp2p.peer.persistent": {
            f"create_{mode}_{backend}peerstore": FUNCTION
            for mode in ("sync", "async")
            for backend in ("", "sqlite_", "memory_", "leveldb_", "rocksdb_")},
    }),
)

_FAMILY_OF = {module: family for family in FAMILIES for module in family.modules}


def loaded_families() -> list[str]:
    """The families that are in memory for real (used, or imported before :func:`install`)."""
    return [family.name for family in FAMILIES if family.loaded]


def _load(family: Family) -> None:
    with family.lock:
        if family.loaded:
            return
        family.loaded = True
        for module in family.modules:
            if isinstance(sys.modules.get(module), _StandIn):
                del sys.modules[module]
        for module in family.modules:
            importlib.import_module(module)


def _real(module: str, name: str) -> Any:
    _load(_FAMILY_OF[module])
    return getattr(sys.modules[module], name)


def _real_if_loaded(module: str, name: str) -> Any:
    return _real(module, name) if _FAMILY_OF[module].loaded else None


class _DeferredClass(type):
    """The type of a stand-in class: constructing it or reading an attribute it does not
    have loads the family and answers with the real class."""

    _standin_for: str
    _deferred_methods: tuple[str, ...]

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return _real(cls._standin_for, cls.__name__)(*args, **kwargs)

    def __getattr__(cls, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        if attribute in cls._deferred_methods and not _FAMILY_OF[cls._standin_for].loaded:
            return _deferred_method(cls._standin_for, cls.__name__, attribute)
        return getattr(_real(cls._standin_for, cls.__name__), attribute)

    def __instancecheck__(cls, instance: Any) -> bool:
        real = _real_if_loaded(cls._standin_for, cls.__name__)
        return real is not None and isinstance(instance, real)

    def __subclasscheck__(cls, subclass: type) -> bool:
        real = _real_if_loaded(cls._standin_for, cls.__name__)
        return real is not None and issubclass(subclass, real)


class _LazyInstance:
    """What the real class (``LAZY_INSTANCE``) or function (``LAZY_RESULT``) of the same
    name would give for these arguments, made the first time it is used."""

    _standin_for: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._arguments = (args, kwargs)
        self._instance: Any = None

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        if self._instance is None:
            args, kwargs = self._arguments
            self._instance = _real(self._standin_for, type(self).__name__)(*args, **kwargs)
        return getattr(self._instance, attribute)


def _deferred_function(module: str, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return _real(module, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__module__ = module
    return call


def _deferred_method(module: str, class_name: str, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(_real(module, class_name), name)(*args, **kwargs)

    call.__name__ = name
    call.__qualname__ = f"{class_name}.{name}"
    call.__module__ = module
    return call


def _is_quic_multiaddr(maddr: Any) -> bool:
    # Every address the real function accepts contains "/quic" (quic or quic-v1).
    if "/quic" not in str(maddr):
        return False
    return bool(_real("libp2p.transport.quic.utils", "is_quic_multiaddr")(maddr))


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        # A name the stand-in does not hold (``from libp2p.bitswap import BitswapClient``).
        if name.startswith("__"):
            raise AttributeError(name)
        return _real(self.__name__, name)


def _standin_value(module: str, name: str, kind: Any) -> Any:
    if (module, name) == ("libp2p.transport.quic.utils", "is_quic_multiaddr"):
        return _is_quic_multiaddr
    if kind == CLASS or isinstance(kind, ClassWithMethods):
        methods = kind.methods if isinstance(kind, ClassWithMethods) else ()
        return _DeferredClass(name, (), {"_standin_for": module, "__module__": module,
                                         "_deferred_methods": methods})
    if kind in (LAZY_INSTANCE, LAZY_RESULT):
        return type(name, (_LazyInstance,), {"_standin_for": module, "__module__": module})
    if kind == FUNCTION:
        return _deferred_function(module, name)
    return kind


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        family = _FAMILY_OF.get(fullname)
        if family is None or family.loaded:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self, origin="bacnode stand-in")
        real = importlib.machinery.PathFinder.find_spec(fullname, path)
        if real is not None and real.submodule_search_locations is not None:
            # A package: its submodules outside the family are imported for real.
            spec.submodule_search_locations = list(real.submodule_search_locations)
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _StandIn(spec.name, f"{spec.name} until it is used (node.libp2p_imports)")

    def exec_module(self, module: types.ModuleType) -> None:
        for name, kind in _FAMILY_OF[module.__name__].modules[module.__name__].items():
            setattr(module, name, _standin_value(module.__name__, name, kind))


_FINDER = _Finder()


def install() -> None:
    """Put the stand-ins in front of the import system (idempotent)."""
    for family in FAMILIES:
        if any(module in sys.modules and not isinstance(sys.modules[module], _StandIn)
               for module in family.modules):
            family.loaded = True
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
