import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.base58 import b58decode, b58encode
from protocol.errors import MalformedMessage
from protocol.identity import (
    NodeKey,
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
    from nacl.signing import VerifyKey

    key = NodeKey(b"\x07" * 32)
    signature = key.sign(b"payload")
    assert public_key_from_peer_id(key.peer_id) == key.public_key
    VerifyKey(public_key_from_peer_id(key.peer_id)).verify(b"payload", signature)
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


# RFC 8032, section 7.1, tests 1 and 2: (public key, message, signature).
RFC_8032_VECTORS = [
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e"
     "39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f"
     "3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
]


@pytest.mark.parametrize(("public_key", "message", "signature"), RFC_8032_VECTORS)
def test_signatures_verify_as_rfc_8032_says(public_key, message, signature):
    from protocol.identity import peer_id_from_public_key

    peer_id = peer_id_from_public_key(bytes.fromhex(public_key))
    signature_bytes, message_bytes = bytes.fromhex(signature), bytes.fromhex(message)
    assert verify_signature(peer_id, signature_bytes, message_bytes)
    assert not verify_signature(peer_id, signature_bytes, message_bytes + b"\0")
    flipped = bytes([signature_bytes[0] ^ 1]) + signature_bytes[1:]
    assert not verify_signature(peer_id, flipped, message_bytes)


def test_a_key_nobody_holds_cannot_sign_for_anyone():
    """The identity point as a public key: OpenSSL's check (through ``cryptography``) takes a
    signature of the identity point and zero for it over any message at all, so a peer ID
    made from it would let anyone speak as that node. Ours refuses small-order keys."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from protocol.identity import peer_id_from_public_key

    identity_point = b"\x01" + b"\0" * 31
    trivial_signature = identity_point + b"\0" * 32
    Ed25519PublicKey.from_public_bytes(
        public_key_from_peer_id(peer_id_from_public_key(identity_point))).verify(
        trivial_signature, b"any message")  # OpenSSL: no error
    peer_id = peer_id_from_public_key(identity_point)
    assert not verify_signature(peer_id, trivial_signature, b"any message")


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=300), st.data())
def test_a_signature_verifies_until_a_byte_of_it_or_of_the_data_changes(seed, data, draw):
    key = NodeKey(seed)
    signature = key.sign(data)
    assert verify_signature(key.peer_id, signature, data)
    index = draw.draw(st.integers(0, 63))
    changed = bytearray(signature)
    changed[index] ^= draw.draw(st.integers(1, 255))
    assert not verify_signature(key.peer_id, bytes(changed), data)
    assert not verify_signature(key.peer_id, signature, data + b"\0")


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=300))
def test_keys_and_signatures_are_those_openssl_makes_from_the_same_seed(seed, data):
    """libsodium signs now (no ``cryptography`` in a node's memory); a key's peer ID and
    signatures must stay the same bytes as OpenSSL's, or every node's identity would change."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    openssl = Ed25519PrivateKey.from_private_bytes(seed)
    key = NodeKey(seed)
    assert key.public_key == openssl.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert key.sign(data) == openssl.sign(data)
