import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError
from protocol.quantities import (
    MAX_QUANTITY,
    format_bytes,
    format_cpu,
    parse_bytes,
    parse_cpu,
    parse_gpu,
)


@pytest.mark.parametrize(
    ("text", "millicores"),
    [
        ("500m", 500),
        ("2", 2000),
        ("0.5", 500),
        ("1.25", 1250),
        (".5", 500),
        ("0", 0),
        ("1m", 1),
        ("0.001", 1),
        ("16", 16000),
        (" 250m ", 250),
        ("1.000", 1000),
    ],
)
def test_parse_cpu(text, millicores):
    assert parse_cpu(text) == millicores


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("512Mi", 512 * 2**20),
        ("1Gb", 10**9),
        ("1GB", 10**9),
        ("1gb", 10**9),
        ("1G", 10**9),
        ("100", 100),
        ("2Ki", 2048),
        ("1.5Gi", 3 * 2**29),
        ("10k", 10_000),
        ("10K", 10_000),
        ("1KiB", 1024),
        ("1Kib", 1024),
        ("3Ti", 3 * 2**40),
        ("1Pi", 2**50),
        ("2P", 2 * 10**15),
        ("5B", 5),
        ("1 Gi", 2**30),
        ("0", 0),
        ("0.5K", 500),
    ],
)
def test_parse_bytes(text, n):
    assert parse_bytes(text) == n


@pytest.mark.parametrize("text", ["1ki", "1MI", "1kib"])
def test_binary_units_are_case_sensitive(text):
    with pytest.raises(LocalProtocolError, match="unknown unit"):
        parse_bytes(text)


def test_parse_bytes_names_the_quantity():
    with pytest.raises(LocalProtocolError, match=r"^invalid disk quantity 'x'"):
        parse_bytes("x", what="disk")


@pytest.mark.parametrize(("text", "n"), [("0", 0), ("1", 1), ("8", 8), (" 2 ", 2)])
def test_parse_gpu(text, n):
    assert parse_gpu(text) == n


@pytest.mark.parametrize("text", ["", "-1", "1.5", "one", "1e3", "+1"])
def test_parse_gpu_rejects(text):
    with pytest.raises(LocalProtocolError, match=r"^invalid GPU count"):
        parse_gpu(text)


def test_quantities_above_64_bits_are_refused():
    assert parse_bytes("8191Pi") < MAX_QUANTITY
    with pytest.raises(LocalProtocolError, match="too large"):
        parse_bytes("8192Pi")


def test_non_string_input_is_an_error_not_a_crash():
    with pytest.raises(LocalProtocolError, match="not a string"):
        parse_cpu(2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (7, "7"),
        (1024, "1Ki"),
        (1000, "1K"),
        (512 * 2**20, "512Mi"),
        (10**10, "10G"),
        (1536, "1536"),
        (1_024_000, "1000Ki"),
        (2**50, "1Pi"),
    ],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    ("millicores", "text"), [(0, "0"), (500, "500m"), (2000, "2"), (1250, "1250m")]
)
def test_format_cpu(millicores, text):
    assert format_cpu(millicores) == text


def test_format_rejects_negative():
    with pytest.raises(ValueError):
        format_bytes(-1)
    with pytest.raises(ValueError):
        format_cpu(-1)


@given(st.integers(min_value=0, max_value=MAX_QUANTITY))
def test_format_bytes_round_trips(n):
    assert parse_bytes(format_bytes(n)) == n


@given(st.integers(min_value=0, max_value=MAX_QUANTITY))
def test_format_cpu_round_trips(n):
    assert parse_cpu(format_cpu(n)) == n


@given(st.text(max_size=20))
def test_parsers_raise_only_local_protocol_error(text):
    for parse in (parse_cpu, parse_bytes, parse_gpu):
        try:
            value = parse(text)
        except LocalProtocolError:
            continue
        assert isinstance(value, int) and 0 <= value <= MAX_QUANTITY
