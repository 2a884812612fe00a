import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import MalformedMessage
from protocol.identity import (
    NodeKey,
    b58decode,
    b58encode,
    public_key_from_peer_id,
    verify_signature,
)


def test_peer_id_matches_libp2p():
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.peer.id import ID

    key = NodeKey.generate()
    libp2p_key = Ed25519PrivateKey.from_bytes(key.seed)
    assert ID.from_pubkey(libp2p_key.get_public_key()).to_base58() == key.peer_id
    assert key.peer_id.startswith("12D3KooW")


def test_public_key_is_recovered_from_peer_id():
    key = NodeKey(b"\x07" * 32)
    signature = key.sign(b"payload")
    public_key_from_peer_id(key.peer_id).verify(signature, b"payload")
    assert verify_signature(key.peer_id, signature, b"payload")
    assert not verify_signature(key.peer_id, signature, b"payload!")
    assert not verify_signature(NodeKey(b"\x08" * 32).peer_id, signature, b"payload")


@given(st.binary(max_size=64))
def test_base58_round_trip(data):
    assert b58decode(b58encode(data)) == data


@pytest.mark.parametrize(
    "peer_id",
    [
        "",
        "not-a-peer-id",
        # An RSA-style (sha2-256 multihash) peer ID: carries no key to verify with.
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
        "12D3KooW" + "0" * 44,
        12345,
    ],
)
def test_unusable_peer_ids_are_refused(peer_id):
    with pytest.raises(MalformedMessage, match="peer ID"):
        public_key_from_peer_id(peer_id)


def test_repr_never_shows_the_seed():
    key = NodeKey(b"\x09" * 32)
    assert "0909" not in repr(key) and key.peer_id in repr(key)
