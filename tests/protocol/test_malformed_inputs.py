"""Malformed user input across quantities, selectors, URIs, key templates and specs.

One row per mistake a user can make, with the exact message they get back. A row's
expectation is either a string (the ``LocalProtocolError`` message) or a list of
``(path, message)`` pairs (every ``FieldError`` of the ``SpecError``, in order).
"""

from functools import partial

import pytest

from protocol.errors import LocalProtocolError, SpecError
from protocol.jobspec import Job
from protocol.placeholders import check_key_template
from protocol.quantities import parse_bytes, parse_cpu, parse_gpu
from protocol.selectors import parse_labels, parse_selector
from protocol.uris import parse_input, parse_publisher

CPU_FORMS = (
    "expected a non-negative number of cores, or of millicores with an 'm' suffix, "
    "e.g. 0.5, 2 or 500m"
)
BYTES_FORMS = (
    "expected a non-negative number with an optional unit (Ki, Mi, Gi, Ti, Pi or K, M, G, T, "
    "P, optionally followed by B), e.g. 512Mi or 1Gb"
)
GPU_FORMS = "expected a non-negative whole number, e.g. 0, 1 or 2"
SELECTOR_FORMS = (
    "expected KEY=VALUE, KEY!=VALUE, KEY in (V1,V2), KEY notin (V1,V2), KEY>N, KEY<N, KEY or !KEY"
)
KEY_FORMS = (
    "expected a name of at most 63 letters, digits, '-', '_' or '.' that starts and ends with "
    "a letter or digit, optionally after a lowercase DNS prefix and '/', "
    "e.g. region or example.com/gpu-type"
)
VALUE_FORMS = (
    "expected at most 63 letters, digits, '-', '_' or '.' that start and end with a letter or "
    "digit (or nothing), e.g. eu-west-1"
)
INPUT_FORMS = (
    "expected SOURCE[:TARGET][,opt=KEY=VALUE...] with SOURCE one of s3://BUCKET/KEY, "
    "ipfs://CID, https://HOST/PATH or http://HOST/PATH, "
    "e.g. s3://bucket/prefix*:/inputs,opt=region=us-east-1"
)
BUCKET_FORMS = (
    "expected 3 to 63 lowercase letters, digits, '.' or '-', starting and ending with a "
    "letter or digit, e.g. my-results"
)
CID_FORMS = (
    "expected a CIDv0 (Qm and 44 base58 characters) or a CIDv1 (e.g. base32, starting with b), "
    "e.g. QmYFhG668yJZmtk84SMMdbrz5Uvuh78Q8nLxTgLDWShkhR"
)
PATH_FORMS = "expected an absolute path without '..' segments, e.g. /inputs/data"
KNOWN_PLACEHOLDERS = "known placeholders: {jobID}, {executionID}, {nodeID}, {date}, {time}"
IMAGE_FORMS = (
    "expected [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST], e.g. ubuntu:22.04 or ghcr.io/org/app:1.2"
)

CID = "QmYFhG668yJZmtk84SMMdbrz5Uvuh78Q8nLxTgLDWShkhR"
T = "Tasks[0]"
P = "Tasks[0].Engine.Params"


def job(*, params=None, top=None, **task):
    """A valid job, with engine params, top-level fields or task fields replaced."""
    engine_params = {"Image": "busybox"} if params is None else params
    document = {"Tasks": [{"Engine": {"Type": "docker", "Params": engine_params}} | task]}
    return document | (top or {})


def s3_source(bucket="data", target="/inputs", **params):
    return {"Source": {"Type": "s3", "Params": {"Bucket": bucket} | params}, "Target": target}


disk = partial(parse_bytes, what="disk")

# (parser, input, expected message or [(path, message), ...])
CASES = [
    # --- quantities -------------------------------------------------------------
    (parse_cpu, "", f"invalid CPU quantity '': empty; {CPU_FORMS}"),
    (parse_cpu, "-1", f"invalid CPU quantity '-1': must not be negative; {CPU_FORMS}"),
    (parse_cpu, "two", f"invalid CPU quantity 'two': {CPU_FORMS}"),
    (parse_cpu, "1e3", f"invalid CPU quantity '1e3': {CPU_FORMS}"),
    (parse_cpu, "500M", f"invalid CPU quantity '500M': {CPU_FORMS}"),
    (
        parse_cpu,
        "0.0005",
        "invalid CPU quantity '0.0005': finer than one millicore; use at most three decimal "
        "places of a core (e.g. 0.125) or whole millicores (e.g. 125m)",
    ),
    (
        parse_cpu,
        "1.5m",
        "invalid CPU quantity '1.5m': finer than one millicore; use at most three decimal "
        "places of a core (e.g. 0.125) or whole millicores (e.g. 125m)",
    ),
    (parse_bytes, "12Qi", f"invalid memory quantity '12Qi': unknown unit 'Qi'; {BYTES_FORMS}"),
    (parse_bytes, "1ki", f"invalid memory quantity '1ki': unknown unit 'ki'; {BYTES_FORMS}"),
    (parse_bytes, "-1Gi", f"invalid memory quantity '-1Gi': must not be negative; {BYTES_FORMS}"),
    (parse_bytes, "", f"invalid memory quantity '': empty; {BYTES_FORMS}"),
    (parse_bytes, "Gi", f"invalid memory quantity 'Gi': {BYTES_FORMS}"),
    (
        parse_bytes,
        "0.5",
        "invalid memory quantity '0.5': not a whole number of bytes; write whole bytes or use "
        "a smaller unit, e.g. 1536 rather than 1.5001Ki",
    ),
    (disk, "10 apples", f"invalid disk quantity '10 apples': unknown unit 'apples'; {BYTES_FORMS}"),
    (
        parse_bytes,
        "9000Pi",
        "invalid memory quantity '9000Pi': too large; the limit is 9223372036854775807",
    ),
    (parse_gpu, "1.5", f"invalid GPU count '1.5': {GPU_FORMS}"),
    (parse_gpu, "-2", f"invalid GPU count '-2': must not be negative; {GPU_FORMS}"),
    # --- selectors and labels ---------------------------------------------------
    (
        parse_selector,
        "region=eu,zone in (a,b",
        "invalid selector 'region=eu,zone in (a,b': clause 'zone in (a,b' is missing ')' after "
        "its value list, e.g. zone in (a,b)",
    ),
    (
        parse_selector,
        "region=eu,,gpu",
        "invalid selector 'region=eu,,gpu': clause 2 is empty; separate clauses with single "
        "commas, e.g. region=eu,gpu=true",
    ),
    (
        parse_selector,
        "zone in ()",
        "invalid selector 'zone in ()': clause 'zone in ()': 'in' needs at least one value, "
        "e.g. zone in (v1,v2)",
    ),
    (
        parse_selector,
        "zone notin a",
        "invalid selector 'zone notin a': clause 'zone notin a': put the values in parentheses, "
        "e.g. zone notin (v1,v2)",
    ),
    (
        parse_selector,
        "region=eu,re gion=us",
        "invalid selector 'region=eu,re gion=us': clause 're gion=us': invalid label key "
        f"'re gion': {KEY_FORMS}",
    ),
    (
        parse_selector,
        "gpu=yes please",
        "invalid selector 'gpu=yes please': clause 'gpu=yes please': invalid label value "
        f"'yes please': {VALUE_FORMS}",
    ),
    (
        parse_selector,
        "cores>many",
        "invalid selector 'cores>many': clause 'cores>many': operator 'gt' compares integers; "
        "'many' is not an integer",
    ),
    (parse_selector, "!", f"invalid selector '!': clause '!': {SELECTOR_FORMS}"),
    (
        parse_selector,
        "zone in (a,(b))",
        "invalid selector 'zone in (a,(b))': nested '(' at position 11; value lists cannot "
        "nest, e.g. zone in (a,b)",
    ),
    (
        parse_selector,
        "a=b)",
        "invalid selector 'a=b)': ')' at position 3 has no matching '('",
    ),
    (
        parse_labels,
        "region=eu,gpu",
        "invalid labels 'region=eu,gpu': item 'gpu' is not KEY=VALUE, e.g. region=eu,gpu=true",
    ),
    (
        parse_labels,
        "-bad=1",
        f"invalid labels '-bad=1': invalid label key '-bad': {KEY_FORMS}",
    ),
    # --- input and publisher flags -----------------------------------------------
    (parse_input, "", f"invalid input '': no source; {INPUT_FORMS}"),
    (
        parse_input,
        "ftp://host/file",
        f"invalid input 'ftp://host/file': unsupported source 'ftp://host/file'; {INPUT_FORMS}",
    ),
    (
        parse_input,
        "/local/dir:/inputs",
        f"invalid input '/local/dir:/inputs': unsupported source '/local/dir'; {INPUT_FORMS}",
    ),
    (
        parse_input,
        "s3://bucket/key:/inputs,region=us-east-1",
        "invalid input 's3://bucket/key:/inputs,region=us-east-1': 'region=us-east-1' is not an "
        "option; options are written opt=KEY=VALUE",
    ),
    (
        parse_input,
        "s3://bucket/key,opt=regoin=us-east-1",
        "invalid input 's3://bucket/key,opt=regoin=us-east-1': unknown option 'regoin' (did you "
        "mean 'region'?) for S3 inputs; allowed options: region, endpoint, versionID, "
        "checksum-256, filter",
    ),
    (
        parse_input,
        "s3://bucket/key,opt=region=",
        "invalid input 's3://bucket/key,opt=region=': option 'region' has no value; "
        "write opt=region=VALUE",
    ),
    (
        parse_input,
        "s3://My_Bucket/key",
        f"invalid input 's3://My_Bucket/key': invalid S3 bucket name 'My_Bucket': {BUCKET_FORMS}",
    ),
    (
        parse_input,
        "s3://bucket/key:/inputs/../etc",
        "invalid input 's3://bucket/key:/inputs/../etc': invalid path '/inputs/../etc': "
        f"{PATH_FORMS}",
    ),
    (
        parse_input,
        "s3://bucket/key:/",
        "invalid input 's3://bucket/key:/': invalid path '/': cannot be the root directory; "
        "use e.g. /inputs",
    ),
    (
        parse_input,
        "s3://bucket/k,opt=checksum-256=abc",
        "invalid input 's3://bucket/k,opt=checksum-256=abc': invalid ChecksumSHA256 'abc': "
        "expected a base64 SHA-256 digest (44 characters ending in '='), "
        "e.g. e0uDqmflfT9b+rMfoCnO5G+cy+8WVTOPUtAqDMnXWbw=",
    ),
    (
        parse_input,
        "ipfs://notacid",
        f"invalid input 'ipfs://notacid': invalid CID 'notacid': {CID_FORMS}",
    ),
    (
        parse_input,
        "https://example.com/f,opt=region=eu",
        "invalid input 'https://example.com/f,opt=region=eu': https:// inputs take no opt= "
        "options, got opt=region",
    ),
    (
        parse_publisher,
        "s3://bucket",
        "invalid publisher 's3://bucket': no object key after the bucket; expected "
        "s3://BUCKET/KEY, e.g. s3://results/{jobID}.tar.gz",
    ),
    (
        parse_publisher,
        "s3://bucket/out-{jobId}",
        "invalid publisher 's3://bucket/out-{jobId}': invalid key template 'out-{jobId}': "
        f"unknown placeholder {{jobId}} (did you mean {{jobID}}?); {KNOWN_PLACEHOLDERS}",
    ),
    (
        parse_publisher,
        "s3://bucket/k,opt=compress=maybe",
        "invalid publisher 's3://bucket/k,opt=compress=maybe': invalid boolean 'maybe': "
        "expected true or false (also accepted: 1/0, yes/no)",
    ),
    (
        parse_publisher,
        "s3://bucket/k,opt=acl=private",
        "invalid publisher 's3://bucket/k,opt=acl=private': unknown option 'acl' for the S3 "
        "publisher; allowed options: endpoint, region, compress",
    ),
    (
        parse_publisher,
        "ipfs,opt=pin=true",
        "invalid publisher 'ipfs,opt=pin=true': the ipfs publisher takes no opt= options",
    ),
    (
        parse_publisher,
        "gcs://bucket/key",
        "invalid publisher 'gcs://bucket/key': unsupported publisher 'gcs://bucket/key'; "
        "expected ipfs, local, noop or s3://BUCKET/KEY[,opt=KEY=VALUE...], "
        "e.g. s3://results/{jobID}.tar.gz,opt=compress=true",
    ),
    (
        parse_publisher,
        "s3://bucket/k,opt=endpoint=localhost:9000",
        "invalid publisher 's3://bucket/k,opt=endpoint=localhost:9000': invalid S3 endpoint "
        "'localhost:9000': expected an http:// or https:// URL with a host, "
        "e.g. https://example.com/data.csv",
    ),
    # --- key templates ---------------------------------------------------------------
    (
        check_key_template,
        "r/{jobID",
        "invalid key template 'r/{jobID': '{' at position 2 is not closed; placeholders are "
        f"written {{name}} and literal braces are not allowed; {KNOWN_PLACEHOLDERS}",
    ),
    (
        check_key_template,
        "{job}/{uuid}",
        "invalid key template '{job}/{uuid}': unknown placeholders {job} (did you mean "
        f"{{jobID}}?), {{uuid}}; {KNOWN_PLACEHOLDERS}",
    ),
    # --- job specs -------------------------------------------------------------------
    (
        Job.from_dict,
        job(params={"Imag": "busybox"}),
        [
            (f"{P}.Imag", "unknown field (did you mean 'Image'?)"),
            (f"{P}.Image", "required field is missing"),
        ],
    ),
    (
        Job.from_dict,
        job(params={"image": "busybox", "Parameters": "echo hi"}),
        [(f"{P}.Parameters", "expected a list, got string 'echo hi'")],
    ),
    (
        Job.from_dict,
        job(params={"image": "busybox", "IMAGE": "alpine"}),
        [(f"{P}.IMAGE", "given twice (also as 'image')")],
    ),
    (
        Job.from_dict,
        job(params={"Image": "Ubuntu:22.04"}),
        [
            (
                f"{P}.Image",
                "invalid image reference 'Ubuntu:22.04': repository names must be lowercase; "
                + IMAGE_FORMS,
            )
        ],
    ),
    (
        Job.from_dict,
        job(params={"Image": "busybox", "EnvironmentVariables": ["1X=2", "A=1", "A=2", 3]}),
        [
            (f"{P}.EnvironmentVariables[3]", "expected a string, got integer 3"),
            (
                f"{P}.EnvironmentVariables[0]",
                "invalid environment variable '1X=2': expected NAME=VALUE, NAME made of "
                "letters, digits and '_' and not starting with a digit, e.g. DEBUG=1",
            ),
            (f"{P}.EnvironmentVariables[2]", "A is already set by EnvironmentVariables[1]"),
        ],
    ),
    (
        Job.from_dict,
        job(params={"Image": "busybox", "WorkingDirectory": "work"}),
        [(f"{P}.WorkingDirectory", f"invalid path 'work': {PATH_FORMS}")],
    ),
    (
        Job.from_dict,
        {"Tasks": [{"Engine": {"Type": "wasm", "Params": {"EntryModule": "x"}}}]},
        [(f"{T}.Engine.Type", "unknown engine type 'wasm'; expected one of: docker, noop")],
    ),
    (
        Job.from_dict,
        {"Tasks": [{"Name": "main"}]},
        [
            (
                f"{T}.Engine",
                "required field is missing; e.g. {Type: docker, Params: {Image: ubuntu}}",
            )
        ],
    ),
    (
        Job.from_dict,
        {"Name": "no-tasks", "Tasks": None},
        [("Tasks", "required field is missing; a job has exactly one task")],
    ),
    (
        Job.from_dict,
        job(top={"Count": "3", "Priority": -1, "Namespace": 7}),
        [
            ("Namespace", "expected a string, got integer 7"),
            ("Priority", "must be between 0 and 9223372036854775807, got -1"),
            ("Count", "expected an integer, got string '3'"),
        ],
    ),
    (
        Job.from_dict,
        job(top={"Meta": {"owner": 7}, "Labels": ["gpu"], "Spec": {}}),
        [
            (
                "Spec",
                "unknown field; allowed fields: ID, Name, Namespace, Type, Priority, "
                "Count, Meta, Labels, Constraints, Tasks, Verification",
            ),
            ("Meta.owner", "expected a string, got integer 7"),
            ("Labels", "expected a mapping of strings to strings, got list ['gpu']"),
        ],
    ),
    (
        Job.from_dict,
        job(
            top={
                "Constraints": [
                    {"Key": "zone", "Values": "a"},
                    {"Key": "gpu", "Operator": "!", "Values": ["x"]},
                ]
            }
        ),
        [
            ("Constraints[0].Operator", "required field is missing"),
            ("Constraints[0].Values", "expected a list, got string 'a'"),
            ("Constraints[1].Values", "operator '!' takes no values, got 1: ['x']"),
        ],
    ),
    (
        Job.from_dict,
        job(InputSources=[{"Source": {"Type": "ipfss", "Params": {"CID": CID}}, "Target": "/in"}]),
        [
            (
                f"{T}.InputSources[0].Source.Type",
                "unknown input source type 'ipfss' (did you mean 'ipfs'?); expected one of: "
                "s3, ipfs, urlDownload, inline",
            )
        ],
    ),
    (
        Job.from_dict,
        job(InputSources=[{"Source": {"Type": "s3", "Params": {"Prefix": "a/"}}}]),
        [
            (
                f"{T}.InputSources[0].Source.Params.Prefix",
                "unknown field; allowed fields: Bucket, Key, Region, Endpoint, VersionID, "
                "ChecksumSHA256, Filter",
            ),
            (f"{T}.InputSources[0].Source.Params.Bucket", "required field is missing"),
            (f"{T}.InputSources[0].Target", "required field is missing"),
        ],
    ),
    (
        Job.from_dict,
        job(
            InputSources=[
                {"Source": {"Type": "urlDownload", "Params": {"URL": "ftp://x/y"}}, "Target": "/a"},
                {"Source": {"Type": "inline", "Params": {"URL": "hello"}}, "Target": "/b"},
                {
                    "Source": {"Type": "inline", "Params": {"URL": "data:;base64,!!"}},
                    "Target": "/c",
                },
            ]
        ),
        [
            (
                f"{T}.InputSources[0].Source.Params.URL",
                "invalid URL 'ftp://x/y': expected an http:// or https:// URL with a host, "
                "e.g. https://example.com/data.csv",
            ),
            (
                f"{T}.InputSources[1].Source.Params.URL",
                "invalid inline data URL 'hello': expected a data: URL, "
                "e.g. data:text/plain;base64,aGVsbG8= or data:,hello",
            ),
            (
                f"{T}.InputSources[2].Source.Params.URL",
                "invalid inline data URL 'data:;base64,!!': the payload is not valid base64; "
                "expected a data: URL, e.g. data:text/plain;base64,aGVsbG8= or data:,hello",
            ),
        ],
    ),
    (
        Job.from_dict,
        job(
            InputSources=[s3_source(), s3_source(target="/inputs/"), s3_source(target="/out")],
            ResultPaths=[{"Name": "outputs", "Path": "/out"}],
        ),
        [
            (f"{T}.InputSources[1].Target", "'/inputs' is already the target of InputSources[0]"),
            (
                f"{T}.InputSources[2].Target",
                "'/out' is inside ResultPaths[0]; inputs and results need separate "
                "directories, e.g. /inputs and /outputs",
            ),
        ],
    ),
    (
        Job.from_dict,
        job(Publisher={"Type": "s3s", "Params": {"Bucket": "b"}}),
        [
            (
                f"{T}.Publisher.Type",
                "unknown publisher type 's3s' (did you mean 's3'?); expected one of: "
                "ipfs, s3, local, noop",
            )
        ],
    ),
    (
        Job.from_dict,
        job(Publisher={"Type": "s3", "Params": {"Bucket": "results", "Key": "", "Compress": 2}}),
        [
            (f"{T}.Publisher.Params.Key", "must not be empty; e.g. results/{jobID}.tar.gz"),
            (
                f"{T}.Publisher.Params.Compress",
                "invalid boolean 2: expected true or false (also accepted: 1/0, yes/no)",
            ),
        ],
    ),
    (
        Job.from_dict,
        job(
            ResultPaths=[
                {"Name": "out", "Path": "outputs"},
                {"Name": "out", "Path": "/o"},
                {"Name": "../x", "Path": "/p"},
            ]
        ),
        [
            (f"{T}.ResultPaths[0].Path", f"invalid path 'outputs': {PATH_FORMS}"),
            (f"{T}.ResultPaths[1].Name", "'out' is already the name of ResultPaths[0]"),
            (
                f"{T}.ResultPaths[2].Name",
                "invalid result name '../x': expected letters, digits, '.', '_' or '-', "
                "starting with a letter or digit, e.g. outputs",
            ),
        ],
    ),
    (
        Job.from_dict,
        job(Resources={"CPU": True, "Memory": "1.5", "GPU": "1.5", "Disk": 1.5}),
        [
            (f"{T}.Resources.CPU", "expected a string or a number, got boolean True"),
            (
                f"{T}.Resources.Memory",
                "invalid memory quantity '1.5': not a whole number of bytes; write whole bytes "
                "or use a smaller unit, e.g. 1536 rather than 1.5001Ki",
            ),
            (f"{T}.Resources.Disk", "expected a string or an integer, got number 1.5"),
            (f"{T}.Resources.GPU", f"invalid GPU count '1.5': {GPU_FORMS}"),
        ],
    ),
    (
        Job.from_dict,
        job(Network={"Type": "Overlay", "Domains": ["exa mple.com"]}),
        [
            (
                f"{T}.Network.Type",
                "unknown network type 'Overlay'; expected one of: None, Full",
            ),
            (
                f"{T}.Network.Domains[0]",
                "invalid domain 'exa mple.com': expected a host name such as example.com, "
                "or .example.com for it and its subdomains",
            ),
        ],
    ),
    (
        Job.from_dict,
        job(Timeouts={"ExecutionTimeout": "10m", "TotalTimeout": -5, "Total": 5}),
        [
            (
                f"{T}.Timeouts.Total",
                "unknown field; allowed fields: ExecutionTimeout, QueueTimeout, TotalTimeout",
            ),
            (f"{T}.Timeouts.ExecutionTimeout", "expected an integer, got string '10m'"),
            (
                f"{T}.Timeouts.TotalTimeout",
                "must be between 0 and 9223372036854775807, got -5",
            ),
        ],
    ),
]


def _case_id(case):
    parser, value, _ = case
    name = getattr(parser, "__name__", None) or parser.func.__name__
    return f"{name}:{value!r}"[:60]


def test_the_table_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize(("parse", "value", "expected"), CASES, ids=[_case_id(c) for c in CASES])
def test_malformed_input(parse, value, expected):
    with pytest.raises(LocalProtocolError) as info:
        parse(value)
    if isinstance(expected, str):
        assert not isinstance(info.value, SpecError)
        assert str(info.value) == expected
    else:
        assert isinstance(info.value, SpecError)
        assert [(e.path, e.message) for e in info.value.errors] == expected
