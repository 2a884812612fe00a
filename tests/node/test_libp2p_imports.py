"""The stand-ins for py-libp2p's unused transports and services (node.libp2p_imports).

Each check runs in a fresh interpreter: what is imported is process-wide state.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from node import libp2p_imports

#: What the stand-ins keep out of a node that uses none of those families.
UNUSED_LIBRARIES = ("aioquic", "OpenSSL", "service_identity", "trio_websocket", "websockets",
                    "zeroconf", "httpx", "requests", "fastecdsa", "dns", "Crypto", "coincurve",
                    "cffi", "pycparser", "libp2p.peer.persistent.factory", "libp2p.bitswap.client",
                    "noise", "cryptography.hazmat.bindings._rust")


def _run(code: str) -> object:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_mib() -> str:
    return ("int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])"
            " / 1024")


def test_a_node_that_uses_none_of_them_never_imports_their_libraries() -> None:
    result = _run(f"""
        import json, sys
        import node.daemon
        from node import libp2p_imports
        print(json.dumps({{"imported": [m for m in {UNUSED_LIBRARIES!r} if m in sys.modules],
                          "families": libp2p_imports.loaded_families(),
                          "rss": {_rss_mib()}}}))
    """)
    assert result["imported"] == [] and result["families"] == [], result
    print(f"import node.daemon: {result['rss']:.1f} MiB")


def test_every_stand_in_name_is_the_real_modules_and_hands_over_to_it() -> None:
    families = [family.name for family in libp2p_imports.FAMILIES]
    result = _run("""
        import importlib, json, sys
        import node  # installs the stand-ins
        import libp2p.host.basic_host as basic_host   # binds names to stand-ins
        from node import libp2p_imports as li
        problems = []
        standin_mdns = basic_host.MDNSDiscovery
        for family in li.FAMILIES:
            li._load(family)
            for module, names in family.modules.items():
                real = sys.modules[module]
                if isinstance(real, li._StandIn):
                    problems.append(f"{module} still a stand-in after loading")
                for name, kind in names.items():
                    if not hasattr(real, name):
                        problems.append(f"{module} has no {name}")
                        continue
                    value = getattr(real, name)
                    if kind in (li.CLASS, li.LAZY_INSTANCE):
                        ok = isinstance(value, type)
                    elif isinstance(kind, li.ClassWithMethods):
                        ok = isinstance(value, type) and all(
                            callable(getattr(value, method, None)) for method in kind.methods)
                    elif kind in (li.FUNCTION, li.LAZY_RESULT):
                        ok = callable(value) and not isinstance(value, type)
                    else:
                        ok = value == kind
                    if not ok:
                        problems.append(f"{module}.{name}: {value!r} is not {kind!r}")
        mdns = importlib.import_module("libp2p.discovery.mdns.mdns")
        print(json.dumps({"problems": problems, "families": li.loaded_families(),
                          "standin_is_class": isinstance(standin_mdns, li._DeferredClass),
                          "real_subclass": issubclass(mdns.MDNSDiscovery, standin_mdns),
                          "zeroconf": "zeroconf" in sys.modules}))
    """)
    assert result["problems"] == [], result["problems"]
    assert result["families"] == families
    # A name bound to a stand-in before loading answers for the real class afterwards.
    assert result["standin_is_class"] and result["real_subclass"] and result["zeroconf"]


def test_constructing_a_stand_in_class_loads_its_family_and_gives_the_real_object() -> None:
    result = _run("""
        import json, sys
        import node  # installs the stand-ins
        from libp2p.security.secio import transport as secio
        from libp2p.crypto.ed25519 import create_new_key_pair
        before = "fastecdsa" in sys.modules
        transport = secio.Transport(create_new_key_pair())
        real = sys.modules["libp2p.security.secio.transport"]
        print(json.dumps({"before": before, "after": "fastecdsa" in sys.modules,
                          "real": type(transport) is real.Transport,
                          "isinstance": isinstance(transport, secio.Transport)}))
    """)
    assert result == {"before": False, "after": True, "real": True, "isinstance": True}


def test_is_quic_multiaddr_answers_as_the_real_one_and_loads_quic_only_for_quic() -> None:
    addresses = ["/ip4/10.0.0.1/tcp/4001", "/ip4/10.0.0.1/udp/4001/quic-v1",
                 "/ip6/::1/udp/4001/quic", "/ip4/10.0.0.1/udp/4001/quic-v1/webtransport",
                 "/dns4/example.org/tcp/443/wss"]
    result = _run(f"""
        import json, sys
        import node  # installs the stand-ins
        import multiaddr
        from libp2p.transport.quic.utils import is_quic_multiaddr
        addresses = [multiaddr.Multiaddr(a) for a in {addresses!r}]
        tcp_only = is_quic_multiaddr(addresses[0])
        loaded_by_tcp = "aioquic" in sys.modules
        ours = [is_quic_multiaddr(a) for a in addresses]
        real = sys.modules["libp2p.transport.quic.utils"].is_quic_multiaddr
        print(json.dumps({{"loaded_by_tcp": loaded_by_tcp, "tcp_only": tcp_only,
                          "ours": ours, "real": [real(a) for a in addresses]}}))
    """)
    assert result["loaded_by_tcp"] is False and result["tcp_only"] is False
    assert result["ours"] == result["real"] == [False, True, True, False, False]


def test_a_swarms_dns_resolver_waits_until_it_is_used() -> None:
    result = _run("""
        import json, sys
        import node.mesh
        from multiaddr.resolvers import DNSResolver
        resolver = DNSResolver()
        constructed = "dns" in sys.modules
        resolve = resolver.resolve      # dials a /dns address: the real resolver now
        real = sys.modules["multiaddr.resolvers.dns"].DNSResolver
        print(json.dumps({"constructed": constructed, "used": "dns" in sys.modules,
                          "real": isinstance(resolve.__self__, real)}))
    """)
    assert result == {"constructed": False, "used": True, "real": True}


def test_a_peers_rsa_or_secp256k1_key_loads_their_family_and_deserializes() -> None:
    # bacnode's own keys are Ed25519; a stranger's libp2p identity may be either of these.
    result = _run("""
        import json, sys
        import node.mesh
        from libp2p.crypto.serialization import deserialize_public_key
        before = [m for m in ("Crypto", "coincurve") if m in sys.modules]
        keys = {}
        for name in ("rsa", "secp256k1"):
            module = __import__(f"libp2p.crypto.{name}", fromlist=["create_new_key_pair"])
            public = module.create_new_key_pair().public_key
            again = deserialize_public_key(public.serialize())
            keys[name] = [type(again).__name__, again.to_bytes() == public.to_bytes()]
        print(json.dumps({"before": before, "keys": keys,
                          "after": [m for m in ("Crypto", "coincurve") if m in sys.modules]}))
    """)
    assert result == {"before": [], "after": ["Crypto", "coincurve"],
                      "keys": {"rsa": ["RSAPublicKey", True],
                               "secp256k1": ["Secp256k1PublicKey", True]}}


def test_two_nodes_connect_and_talk_without_loading_cryptography() -> None:
    """Their connection is secured by node.noise (libsodium): neither noiseprotocol nor
    ``cryptography``'s Rust extension (9-10 MiB of an idle daemon) is loaded for it, nor
    for the X25519 key pair py-libp2p makes for every swarm whether it uses it or not."""
    result = _run(f"""
        import json, sys
        import node  # installs the stand-ins
        import multiaddr
        import trio
        from libp2p.peer.peerinfo import info_from_p2p_addr
        from node.mesh import Mesh
        from protocol.identity import NodeKey

        async def ignore(*_):
            pass

        async def answer(peer, data):
            return data[::-1]

        async def main():
            a = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=ignore,
                     mdns=False)
            b = Mesh(NodeKey.generate(), listen=("/ip4/127.0.0.1/tcp/0",), on_message=ignore,
                     on_request=answer, mdns=False)
            async with trio.open_nursery() as nursery:
                await nursery.start(a.run)
                await nursery.start(b.run)
                info = info_from_p2p_addr(multiaddr.Multiaddr(b.addresses()[0]))
                a.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
                with trio.fail_after(20):
                    reply = await a.request(info.peer_id.to_base58(), b"ping")
                a.stop()
                b.stop()
            return reply

        reply = trio.run(main)
        from libp2p.crypto.x25519 import create_new_key_pair
        unused_pair = create_new_key_pair()
        before_use = [m for m in {UNUSED_LIBRARIES!r} if m in sys.modules]
        private = unused_pair.private_key  # used: now py-libp2p's real X25519 key
        print(json.dumps({{"reply": reply.decode(), "imported": before_use,
                          "key": type(private).__name__, "raw": len(private.to_bytes()),
                          "rust": "cryptography.hazmat.bindings._rust" in sys.modules}}))
    """)
    assert result == {"reply": "gnip", "imported": [], "key": "X25519PrivateKey", "raw": 32,
                      "rust": True}
