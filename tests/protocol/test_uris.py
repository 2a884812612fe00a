import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError
from protocol.uris import InputSource, PublisherSpec, parse_input, parse_publisher

CID = "QmYFhG668yJZmtk84SMMdbrz5Uvuh78Q8nLxTgLDWShkhR"
CHECKSUM = "e0uDqmflfT9b+rMfoCnO5G+cy+8WVTOPUtAqDMnXWbw="


@pytest.mark.parametrize(
    ("text", "source_type", "params", "target"),
    [
        (
            "s3://noaa-goes16/ABI-L1b-RadC/2000/001/12/OR_ABI-L1b-RadC-M3C01*:/inputs,"
            "opt=region=us-east-1",
            "s3",
            {
                "Bucket": "noaa-goes16",
                "Key": "ABI-L1b-RadC/2000/001/12/OR_ABI-L1b-RadC-M3C01*",
                "Region": "us-east-1",
            },
            "/inputs",
        ),
        ("s3://bucket/key", "s3", {"Bucket": "bucket", "Key": "key"}, "/inputs"),
        ("s3://bucket", "s3", {"Bucket": "bucket", "Key": ""}, "/inputs"),
        ("s3://bucket/dir/", "s3", {"Bucket": "bucket", "Key": "dir/"}, "/inputs"),
        ("S3://bucket/k:/data/", "s3", {"Bucket": "bucket", "Key": "k"}, "/data"),
        (
            f"s3://bkt/k,opt=endpoint=http://127.0.0.1:8333,opt=versionID=v1,"
            f"opt=checksum-256={CHECKSUM},opt=filter=.*\\.csv",
            "s3",
            {
                "Bucket": "bkt",
                "Key": "k",
                "Endpoint": "http://127.0.0.1:8333",
                "VersionID": "v1",
                "ChecksumSHA256": CHECKSUM,
                "Filter": ".*\\.csv",
            },
            "/inputs",
        ),
        # Option names are matched case-insensitively.
        (
            "s3://bkt/k,opt=VersionId=v2",
            "s3",
            {"Bucket": "bkt", "Key": "k", "VersionID": "v2"},
            "/inputs",
        ),
        (f"ipfs://{CID}:/inputs/data", "ipfs", {"CID": CID}, "/inputs/data"),
        (f"ipfs://{CID}", "ipfs", {"CID": CID}, "/inputs"),
        ("https://host/file:/inputs/f", "urlDownload", {"URL": "https://host/file"}, "/inputs/f"),
        ("http://host/file", "urlDownload", {"URL": "http://host/file"}, "/inputs"),
        # A port's colon is not followed by "/", so it never starts a target.
        (
            "http://host:8080/a.csv:/in/a.csv",
            "urlDownload",
            {"URL": "http://host:8080/a.csv"},
            "/in/a.csv",
        ),
        ("http://host:8080/a.csv", "urlDownload", {"URL": "http://host:8080/a.csv"}, "/inputs"),
        # A "://" later in the URL is not a target either.
        (
            "https://h/r?u=http://x/y:/in",
            "urlDownload",
            {"URL": "https://h/r?u=http://x/y"},
            "/in",
        ),
        ("https://h/r?u=http://x/y", "urlDownload", {"URL": "https://h/r?u=http://x/y"}, "/inputs"),
    ],
)
def test_parse_input(text, source_type, params, target):
    source = parse_input(text)
    assert source == InputSource(source_type, params, target)


def test_parse_input_to_dict_is_bacalhau_shaped():
    assert parse_input("s3://bucket/prefix*:/inputs,opt=region=eu-west-1").to_dict() == {
        "Source": {
            "Type": "s3",
            "Params": {"Bucket": "bucket", "Key": "prefix*", "Region": "eu-west-1"},
        },
        "Target": "/inputs",
    }


@pytest.mark.parametrize(
    ("text", "publisher"),
    [
        ("ipfs", PublisherSpec("ipfs")),
        ("IPFS", PublisherSpec("ipfs")),
        ("local", PublisherSpec("local")),
        ("noop", PublisherSpec("noop")),
        (
            "s3://bucket/key,opt=endpoint=http://h:9000,opt=region=r,opt=compress=true",
            PublisherSpec(
                "s3",
                {
                    "Bucket": "bucket",
                    "Key": "key",
                    "Compress": True,
                    "Endpoint": "http://h:9000",
                    "Region": "r",
                },
            ),
        ),
        (
            "s3://bucket/result-{date}-{jobID}",
            PublisherSpec(
                "s3", {"Bucket": "bucket", "Key": "result-{date}-{jobID}", "Compress": False}
            ),
        ),
        (
            "s3://bucket/out/,opt=compress=no",
            PublisherSpec("s3", {"Bucket": "bucket", "Key": "out/", "Compress": False}),
        ),
    ],
)
def test_parse_publisher(text, publisher):
    assert parse_publisher(text) == publisher


@pytest.mark.parametrize(
    ("value", "compress"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("No", False),
    ],
)
def test_compress_booleans(value, compress):
    publisher = parse_publisher(f"s3://bucket/k,opt=compress={value}")
    assert publisher.params["Compress"] is compress


def test_publisher_to_dict_is_bacalhau_shaped():
    assert parse_publisher("s3://bucket/k,opt=region=r").to_dict() == {
        "Type": "s3",
        "Params": {"Bucket": "bucket", "Key": "k", "Compress": False, "Region": "r"},
    }


@pytest.mark.parametrize(
    "text",
    [
        "s3://bucket/key:/inputs,opt=region=us-east-1",
        f"ipfs://{CID}:/data",
        "https://example.com/a.csv:/in/a.csv",
    ],
)
def test_cli_and_spec_agree(text):
    source = parse_input(text)
    assert InputSource.from_dict(source.to_dict()) == source


def test_publisher_cli_and_spec_agree():
    publisher = parse_publisher("s3://bucket/{jobID},opt=compress=1,opt=endpoint=http://h:1")
    assert PublisherSpec.from_dict(publisher.to_dict()) == publisher


@pytest.mark.parametrize("text", ["s3://bucket/k,region=eu", "s3://bucket/k:/in,x"])
def test_text_after_a_comma_must_be_an_option(text):
    with pytest.raises(
        LocalProtocolError, match="is not an option; options are written opt=KEY=VALUE"
    ):
        parse_input(text)


segments = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,8}", fullmatch=True)


@given(
    bucket=st.from_regex(r"[a-z0-9][a-z0-9-]{1,10}[a-z0-9]", fullmatch=True),
    key=st.lists(segments, max_size=3).map("/".join),
    target=st.one_of(
        st.none(), st.lists(segments, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))
    ),
)
def test_s3_input_round_trips(bucket, key, target):
    text = f"s3://{bucket}/{key}" + (f":{target}" if target else "")
    source = parse_input(text)
    assert source.params == {"Bucket": bucket, "Key": key}
    assert source.target == (target or "/inputs")


@given(st.text(max_size=40))
def test_parsers_raise_only_local_protocol_error(text):
    for parse in (parse_input, parse_publisher):
        try:
            parse(text)
        except LocalProtocolError:
            pass


@pytest.mark.parametrize(("long_form", "short_form"), [
    ("src=s3://bkt/k*,dst=/data,opt=region=eu-west-1", "s3://bkt/k*:/data,opt=region=eu-west-1"),
    ("src=ipfs://QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn,dst=/in",
     "ipfs://QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn:/in"),
    ("src=https://example.com/a.txt", "https://example.com/a.txt"),
])
def test_bacalhau_src_dst_input_form_reads_as_the_short_form(long_form, short_form):
    assert parse_input(long_form) == parse_input(short_form)


def test_src_dst_form_without_a_source_is_refused():
    with pytest.raises(LocalProtocolError, match="src= names no source"):
        parse_input("src=,dst=/in")


@pytest.mark.parametrize(("after", "example"), [("data", "/inputs/data"), ("", "/inputs")])
def test_an_ipfs_target_that_is_not_absolute_is_named_with_the_form_that_works(after, example):
    # Only ":/" starts a target (so URLs with ports split as meant): "CID:data" used to be
    # refused as an invalid CID "CID:data", which hides what was wrong.
    with pytest.raises(LocalProtocolError) as refused:
        parse_input(f"ipfs://{CID}:{after}")
    assert str(refused.value) == (
        f"invalid input 'ipfs://{CID}:{after}': the target after the CID must be an absolute "
        f"path in the container, got {after!r}; e.g. ipfs://{CID}:{example}")
