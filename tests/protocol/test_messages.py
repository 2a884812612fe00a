"""Round trips and signature properties for every message type."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.envelope import EnvelopeVerifier
from protocol.errors import MalformedMessage, RemoteProtocolError, SenderMismatch
from protocol.examples import KEYS, author_key
from protocol.messages import (
    MESSAGE_TYPES,
    Bid,
    Capacity,
    ManifestEntry,
    ResultRecord,
    decode_message,
    open_message,
    seal_message,
)
from tests.protocol.strategies import (
    messages,
    new_execution_id,
    new_job_id,
    result_records,
)

NOW = 1_780_000_000_000


@given(messages)
def test_body_round_trip(message):
    body = codec.decode(codec.encode(message.to_body()))
    assert type(message).from_body(body) == message


@given(messages)
def test_sealed_message_opens_to_itself(message):
    data = seal_message(author_key(message), message, now_ms=NOW)
    envelope, opened = open_message(EnvelopeVerifier(), data, now_ms=NOW)
    assert opened == message
    assert envelope.sender == author_key(message).peer_id


@settings(max_examples=60)
@given(messages, st.data())
def test_any_flipped_byte_is_rejected(message, data):
    wire = bytearray(seal_message(author_key(message), message, now_ms=NOW))
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(RemoteProtocolError):
        open_message(EnvelopeVerifier(), bytes(wire), now_ms=NOW)


@given(messages)
def test_a_message_signed_by_another_node_is_refused(message):
    if type(message).TYPE == "bid.decision":
        return  # a decision is about the bidder, signed by the requester
    impostor = next(key for key in KEYS if key != author_key(message))
    data = seal_message(impostor, message, now_ms=NOW)
    with pytest.raises(SenderMismatch, match="was signed by"):
        open_message(EnvelopeVerifier(), data, now_ms=NOW)


def test_every_message_type_is_covered_by_the_strategy():
    seen = set()

    @given(messages)
    @settings(max_examples=300)
    def collect(message):
        seen.add(type(message).TYPE)

    collect()
    assert seen == set(MESSAGE_TYPES)


@given(result_records())
def test_result_record_rejects_unsafe_manifest_paths(record):
    for bad in ["../etc/passwd", "/abs", "a//b", "a/./b", ""]:
        entry = ManifestEntry(bad, 1, "0" * 64)
        body = dataclasses.replace(record, outputs=(entry,)).to_body()
        with pytest.raises(MalformedMessage, match="is not safe"):
            ResultRecord.from_body(body)


def _bid_body(**changes):
    bid = Bid(new_job_id(), new_execution_id(), KEYS[0].peer_id, True, "", Capacity(1, 2, 3, 0), 0)
    return {**bid.to_body(), **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"accept": 1}, "bid.accept must be bool, got int"),
        ({"running_executions": True}, "bid.running_executions must be int, got bool"),
        ({"job_id": "j-123"}, "bid.job_id 'j-123' is not a j-<uuid4> ID"),
        ({"execution_id": "x"}, "bid.execution_id 'x' is not an e-<uuid4> ID"),
        ({"node_id": "nobody"}, "bid.node_id 'nobody' is not an Ed25519 peer ID"),
        ({"free": {"cpu_milli": -1, "memory": 0, "disk": 0, "gpu": 0}},
         "bid.free.cpu_milli must not be negative"),
        ({"free": [1, 2]}, "bid.free must be a map, got list"),
        ({"surprise": 1}, "bid: unexpected field(s) surprise"),
    ],
)
def test_malformed_bid_fields_are_named(changes, message):
    with pytest.raises(MalformedMessage) as caught:
        Bid.from_body(_bid_body(**changes))
    assert message in str(caught.value)


def test_missing_fields_are_listed():
    body = _bid_body()
    del body["reason"], body["free"]
    with pytest.raises(MalformedMessage, match=r"bid: missing field\(s\) free, reason"):
        Bid.from_body(body)


def test_announcement_with_invalid_job_is_malformed():
    from protocol.messages import JobAnnouncement

    body = {
        "job_id": new_job_id(),
        "requester": KEYS[0].peer_id,
        "job": {"Type": "batch", "Tasks": []},
        "bid_deadline_ms": 0,
    }
    with pytest.raises(MalformedMessage, match=r"job.announce.job: invalid job spec"):
        JobAnnouncement.from_body(body)


def test_an_announcement_built_from_a_typed_job_carries_it_and_opens_to_an_equal_one():
    """The requester's own compute side takes the job as the requester holds it; a remote
    node parses the map it receives into the same job."""
    from protocol.jobspec import Job
    from protocol.messages import JobAnnouncement

    job = dataclasses.replace(Job.from_dict({"Type": "batch", "Count": 2, "Tasks": [
        {"Name": "t", "Engine": {"Type": "docker", "Params": {"Image": "busybox"}}}]}),
        id=new_job_id())
    announcement = JobAnnouncement.of_job(job, requester=KEYS[0].peer_id,
                                          bid_deadline_ms=NOW, candidates=(KEYS[1].peer_id,))
    assert announcement.spec is job
    assert announcement.job_id == job.id and announcement.job == job.to_dict()
    _, received = open_message(EnvelopeVerifier(),
                               seal_message(KEYS[0], announcement, now_ms=NOW), now_ms=NOW)
    assert isinstance(received, JobAnnouncement)
    assert received == announcement and received.spec == job


def test_an_announcement_names_at_most_max_candidates_nodes():
    from protocol.messages import MAX_CANDIDATES, JobAnnouncement

    body = {
        "job_id": new_job_id(),
        "requester": KEYS[0].peer_id,
        "job": {"Type": "batch", "Tasks": [{"Name": "t", "Engine": {"Type": "noop"}}]},
        "bid_deadline_ms": 0,
        "candidates": [KEYS[0].peer_id] * MAX_CANDIDATES,
    }
    JobAnnouncement.from_body(body)
    body["candidates"].append(KEYS[1].peer_id)
    with pytest.raises(MalformedMessage, match=r"candidates: 257 nodes named, at most 256"):
        JobAnnouncement.from_body(body)


def test_a_job_spec_too_big_for_an_announcement_says_so():
    from protocol.jobspec import Job
    from protocol.messages import MAX_JOB_BYTES, job_too_big

    def spec(env_bytes: int) -> dict:
        return Job.from_dict({"Type": "batch", "Tasks": [{
            "Name": "t", "Engine": {"Type": "noop"},
            "Env": {"DATA": "x" * env_bytes}}]}).to_dict()

    assert job_too_big(spec(MAX_JOB_BYTES - 1024)) is None
    message = job_too_big(spec(600 * 1024))
    assert message is not None
    assert message.startswith("the job spec is 600 KiB encoded and a job announcement carries "
                              "at most 480 KiB")


def test_unknown_type_in_verified_envelope():
    from protocol.envelope import Envelope
    from protocol.errors import UnknownMessageType

    envelope = Envelope("gossip.spam", KEYS[0].peer_id, NOW, b"n" * 16, {})
    with pytest.raises(UnknownMessageType):
        decode_message(envelope)


def test_published_locations_round_trip_through_bacalhau_spec_configs():
    from protocol.messages import published_location, published_spec_config

    ipfs = {"StorageSource": "IPFS", "Name": "ipfs://QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
            "CID": "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"}
    s3 = {"StorageSource": "S3", "Name": "s3://b/k.tar.gz",
          "S3": {"Bucket": "b", "Key": "k.tar.gz", "Checksum": "x", "VersionID": "v1",
                 "Region": "us-east-1", "Endpoint": "", "Compress": True}}
    local = {"StorageSource": "Local", "Name": "local://peer/e-1"}
    assert published_spec_config(ipfs) == {
        "Type": "ipfs", "Params": {"Name": ipfs["Name"], "CID": ipfs["CID"]}}
    assert published_spec_config(s3)["Params"]["ChecksumSHA256"] == "x"
    assert published_spec_config(s3)["Params"]["Bucket"] == "b"
    for location in (ipfs, s3, local, {"StorageSource": "Noop", "Name": ""}):
        assert published_location(published_spec_config(location)) == location


@given(messages)
def test_packed_messages_come_back_as_they_were(message):
    from protocol.messages import pack_message, unpack_message

    assert unpack_message(pack_message(message)) == message


def test_unpacking_garbage_is_a_malformed_message():
    from protocol.errors import MalformedMessage
    from protocol.messages import unpack_message

    for data in (b"", b"\x81\xa4type\xa3nah", b"\xc1"):
        with pytest.raises(MalformedMessage):
            unpack_message(data)


def test_a_packed_message_without_a_body_is_malformed():
    from protocol.errors import MalformedMessage
    from protocol.messages import unpack_message

    with pytest.raises(MalformedMessage):
        unpack_message(codec.encode({"type": "node.info"}))


def _example(kind: type) -> dict:
    from protocol.examples import example_messages

    return next(m for m in example_messages() if type(m) is kind).to_body()


@pytest.mark.parametrize(
    ("kind", "changes", "message"),
    [
        ("NodeInfo", {"addresses": ["/ip4/1.2.3.4/tcp/1", 5]},
         "node.info.addresses[1] must be str, got int"),
        ("NodeInfo", {"addresses": "/ip4/1.2.3.4/tcp/1"},
         "node.info.addresses must be a list, got str"),
        ("NodeInfo", {"labels": {"zone": 1}}, "node.info.labels.zone must be str, got int"),
        ("NodeInfo", {"labels": {1: "b"}}, "node.info.labels key must be str, got int"),
        ("NodeInfo", {"labels": ["zone"]}, "node.info.labels must be a map, got list"),
        ("NodeInfo", {"total": {"cpu_milli": True, "memory": 0, "disk": 0, "gpu": 0}},
         "node.info.total.cpu_milli must be int, got bool"),
        ("ResultRecord", {"outputs": [{"path": "outputs/a", "size": "5", "sha256": "5" * 64}]},
         "result.outputs[0].size must be int, got str"),
        ("ResultRecord", {"outputs": [["outputs/a", 5]]},
         "result.outputs[0] must be a map, got list"),
    ],
)
def test_a_wrong_value_inside_a_list_map_or_record_is_named_by_its_path(kind, changes, message):
    cls = next(cls for cls in MESSAGE_TYPES.values() if cls.__name__ == kind)
    with pytest.raises(MalformedMessage) as caught:
        cls.from_body({**_example(cls), **changes})
    assert message in str(caught.value)



def test_a_capacity_fits_only_when_no_resource_of_it_is_over() -> None:
    room = Capacity(cpu_milli=2000, memory=4 << 30, disk=10 << 30, gpu=1)
    assert room.fits_in(room)
    assert Capacity().fits_in(room)
    for field in dataclasses.fields(Capacity):
        over = dataclasses.replace(room, **{field.name: getattr(room, field.name) + 1})
        assert not over.fits_in(room), field.name
        assert room.fits_in(over), field.name
