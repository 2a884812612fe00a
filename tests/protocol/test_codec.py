import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import codec
from protocol.errors import LocalProtocolError, MalformedMessage

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(values)
def test_decode_inverts_encode(value):
    assert codec.decode(codec.encode(value)) == value


@given(st.dictionaries(st.text(), st.integers(-(2**63), 2**64 - 1)))
def test_encoding_ignores_key_insertion_order(mapping):
    reordered = dict(reversed(list(mapping.items())))
    assert codec.encode(mapping) == codec.encode(reordered)


@given(values)
def test_canonical_bytes_decode_in_order_and_encode_back_as_they_were(value):
    data = codec.encode(value)
    decoded, in_order = codec.decode_noting_order(data)
    assert in_order
    assert codec.encode_in_order(decoded) == data


def test_a_map_out_of_canonical_order_at_any_depth_is_noticed():
    def out_of_order(nested: dict) -> bytes:
        return msgpack.packb(nested, use_bin_type=True)

    for value in ({"b": 1, "a": 2}, {"a": [{"z": 1, "y": 2}]}, [{"k": {"b": 0, "a": 0}}]):
        decoded, in_order = codec.decode_noting_order(out_of_order(value))
        assert decoded == value and not in_order
        assert codec.encode(decoded) != codec.encode_in_order(decoded)


def test_tuples_encode_as_lists():
    assert codec.encode((1, "a")) == codec.encode([1, "a"])


def test_subclasses_encode_as_their_base_types():
    from collections import OrderedDict
    from enum import IntEnum, StrEnum
    from types import MappingProxyType

    class Colour(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    value = {"b": Colour.RED, "a": (Level.HIGH, OrderedDict(z=1, y=b"x")), "c": True}
    plain = {"a": [3, {"y": b"x", "z": 1}], "b": "red", "c": True}
    assert codec.encode(value) == codec.encode(plain) == msgpack.packb(
        {"a": [3, {"y": b"x", "z": 1}], "b": "red", "c": True}, use_bin_type=True
    )
    assert codec.encode(MappingProxyType({"b": 1, "a": 2})) == codec.encode({"a": 2, "b": 1})


def test_encoder_and_decoder_agree_on_the_depth_limit():
    def nested(levels: int) -> list:
        value: list = [0]
        for _ in range(levels - 1):
            value = [value]
        return value

    deepest = nested(codec.MAX_DEPTH)  # the 0 sits at depth MAX_DEPTH
    assert codec.decode(codec.encode(deepest)) == deepest
    with pytest.raises(LocalProtocolError, match="nests deeper"):
        codec.encode(nested(codec.MAX_DEPTH + 1))
    with pytest.raises(MalformedMessage, match="nests deeper"):
        codec.decode(b"\x91" * (codec.MAX_DEPTH + 1) + b"\x00")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "cannot encode float canonically"),
        ({1: "a"}, "map key 1 is not a string"),
        ({"a": {1, 2}}, "cannot encode set canonically"),
        (2**64, "does not fit in 64 bits"),
    ],
)
def test_encode_refuses_non_canonical_values(value, message):
    with pytest.raises(LocalProtocolError, match=message):
        codec.encode(value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (msgpack.packb(1.5), "floats are not allowed"),
        (msgpack.packb({"a": [0.25]}), "floats are not allowed"),
        (msgpack.packb({1: 2}), "not valid msgpack"),
        (msgpack.packb(msgpack.ExtType(5, b"x")), "extension type 5 is not allowed"),
        (msgpack.packb(1) + msgpack.packb(2), "not valid msgpack: ExtraData"),
        (b"\xc1", "not valid msgpack"),
        (b"\x92\x01", "not valid msgpack"),
        (b"", "not valid msgpack"),
        (b"\x91" * 40 + b"\x00", "nests deeper than 32 levels"),
    ],
)
def test_decode_names_the_problem(data, message):
    with pytest.raises(MalformedMessage, match=message):
        codec.decode(data)


def test_decode_enforces_size_limit():
    with pytest.raises(MalformedMessage, match="more than the 10-byte limit"):
        codec.decode(codec.encode("x" * 20), max_size=10)
