import base64
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.errors import FieldError, SpecError
from protocol.jobspec import (
    EngineSpec,
    InputSource,
    Job,
    NetworkSpec,
    PublisherSpec,
    Resources,
    ResultPath,
    Task,
    Timeouts,
    check_image,
    parse_job_document,
)
from protocol.selectors import Constraint

CID = "QmYFhG668yJZmtk84SMMdbrz5Uvuh78Q8nLxTgLDWShkhR"
JOB_ID = "j-46a23fe7-e063-4ba6-8879-aac62af732b0"


def minimal(**task):
    return {"Tasks": [{"Engine": {"Type": "docker", "Params": {"Image": "busybox"}}, **task}]}


def errors_of(data):
    with pytest.raises(SpecError) as info:
        Job.from_dict(data)
    return [(error.path, error.message) for error in info.value.errors]


def test_minimal_job_gets_defaults():
    job = Job.from_dict(minimal())
    assert job == Job(tasks=(Task(engine=EngineSpec(image="busybox")),))
    assert (job.name, job.namespace, job.type, job.priority, job.count) == (
        "",
        "default",
        "batch",
        0,
        1,
    )
    assert job.task.name == "main"
    assert job.task.publisher == PublisherSpec("ipfs", {})
    assert job.task.network == NetworkSpec("None", ())


def test_minimal_job_to_dict_is_the_full_normalised_shape():
    assert Job.from_dict(minimal()).to_dict() == {
        "Name": "",
        "Namespace": "default",
        "Type": "batch",
        "Priority": 0,
        "Count": 1,
        "Meta": {},
        "Labels": {},
        "Constraints": [],
        "Tasks": [
            {
                "Name": "main",
                "Engine": {
                    "Type": "docker",
                    "Params": {
                        "Image": "busybox",
                        "Entrypoint": [],
                        "Parameters": [],
                        "EnvironmentVariables": [],
                    },
                },
                "InputSources": [],
                "Publisher": {"Type": "ipfs", "Params": {}},
                "ResultPaths": [],
                "Resources": {},
                "Network": {"Type": "None", "Domains": []},
                "Timeouts": {"ExecutionTimeout": 0, "QueueTimeout": 0},
            }
        ],
    }


FULL = {
    "ID": JOB_ID,
    "Name": "goes",
    "Namespace": "science",
    "Type": "Batch",
    "Priority": 3,
    "Count": 2,
    "Meta": {"owner": "walid"},
    "Labels": {"team": "ml"},
    "Constraints": [{"Key": "region", "Operator": "==", "Values": ["eu"]}],
    "Tasks": [
        {
            "Name": "copy",
            "Engine": {
                "Type": "Docker",
                "Params": {
                    "Image": "ubuntu:22.04",
                    "Entrypoint": ["sh", "-c"],
                    "Parameters": ["cp -r /inputs/* /outputs/"],
                    "EnvironmentVariables": ["A=1", "B=x=y"],
                    "WorkingDirectory": "/work/",
                },
            },
            "InputSources": [
                {
                    "Source": {
                        "Type": "S3",
                        "Params": {
                            "Bucket": "noaa-goes16",
                            "Key": "ABI*",
                            "Region": "us-east-1",
                            "Filter": "",
                        },
                    },
                    "Target": "/inputs//goes/",
                },
                {
                    "Source": {"Type": "ipfs", "Params": {"CID": CID}},
                    "Target": "/cid",
                    "Alias": "c",
                },
                {
                    "Source": {"Type": "URLDOWNLOAD", "Params": {"URL": "https://x.org/a"}},
                    "Target": "/u",
                },
                {"Source": {"Type": "inline", "Params": {"URL": "data:,hello"}}, "Target": "/i"},
            ],
            "Publisher": {
                "Type": "S3",
                "Params": {
                    "Bucket": "results",
                    "Key": "r/{jobID}-{date}.tgz",
                    "Compress": "yes",
                    "Region": "",
                },
            },
            "ResultPaths": [{"Name": "outputs", "Path": "/outputs/"}],
            "Resources": {"CPU": 0.5, "Memory": "1.5Gi", "Disk": "10GB", "GPU": 1},
            "Network": {"Type": "host", "Domains": ["example.com", ".pypi.org"]},
            "Timeouts": {"ExecutionTimeout": 600, "QueueTimeout": 30},
        }
    ],
}


def test_full_job_is_normalised():
    job = Job.from_dict(FULL)
    assert job == Job(
        id=JOB_ID,
        name="goes",
        namespace="science",
        type="batch",
        priority=3,
        count=2,
        meta={"owner": "walid"},
        labels={"team": "ml"},
        constraints=(Constraint("region", "=", ("eu",)),),
        tasks=(
            Task(
                name="copy",
                engine=EngineSpec(
                    image="ubuntu:22.04",
                    entrypoint=("sh", "-c"),
                    parameters=("cp -r /inputs/* /outputs/",),
                    environment_variables=("A=1", "B=x=y"),
                    working_directory="/work",
                ),
                input_sources=(
                    InputSource(
                        "s3",
                        {"Bucket": "noaa-goes16", "Key": "ABI*", "Region": "us-east-1"},
                        "/inputs/goes",
                    ),
                    InputSource("ipfs", {"CID": CID}, "/cid", "c"),
                    InputSource("urlDownload", {"URL": "https://x.org/a"}, "/u"),
                    InputSource("inline", {"URL": "data:,hello"}, "/i"),
                ),
                publisher=PublisherSpec(
                    "s3", {"Bucket": "results", "Key": "r/{jobID}-{date}.tgz", "Compress": True}
                ),
                result_paths=(ResultPath("outputs", "/outputs"),),
                resources=Resources(cpu_milli=500, memory=3 * 2**29, disk=10**10, gpu=1),
                network=NetworkSpec("Full", ("example.com", ".pypi.org")),
                timeouts=Timeouts(600, 30),
            ),
        ),
    )
    assert job.to_dict()["Tasks"][0]["Resources"] == {
        "CPU": "500m",
        "Memory": "1536Mi",
        "Disk": "10G",
        "GPU": "1",
    }
    assert Job.from_dict(job.to_dict()) == job


def test_to_dict_encodes_canonically_and_survives_the_wire():
    job = Job.from_dict(FULL)
    decoded = codec.decode(codec.encode(job.to_dict()))
    assert Job.from_dict(decoded) == job


def test_bacalhau_empty_strings_mean_unset():
    job = Job.from_dict(
        minimal(Resources={"CPU": "", "Memory": "", "Disk": "", "GPU": ""})
        | {"Meta": None, "Labels": None, "Constraints": None}
    )
    assert job.task.resources == Resources()
    doc = minimal()
    doc["Tasks"][0]["Engine"]["Params"]["WorkingDirectory"] = ""
    assert Job.from_dict(doc).task.engine.working_directory == ""


def test_several_errors_are_all_reported():
    data = {
        "Name": 5,
        "Type": "service",
        "Count": 0,
        "Priority": True,
        "Labels": {"bad key": "x"},
        "Constraints": [{"Key": "zone", "Operator": "inn", "Values": ["a"]}],
        "Tasks": [
            {
                "Engine": {"Type": "docker", "Params": {"Imag": "busybox"}},
                "InputSources": [
                    {
                        "Source": {"Type": "s3", "Params": {"Bucket": "Bad_Bucket"}},
                        "Target": "inputs",
                    },
                    {"Source": {"Type": "ftp", "Params": {}}, "Target": "/x"},
                ],
                "Publisher": {"Type": "s3", "Params": {"Key": "{jobid}"}},
                "Resources": {"CPU": "-1", "Memory": "12Qi"},
                "Netwrk": {},
                "Timeouts": {"ExecutionTimeout": -5},
            }
        ],
    }
    assert errors_of(data) == [
        ("Name", "expected a string, got integer 5"),
        ("Type", "unknown job type 'service'; expected one of: batch"),
        ("Priority", "expected an integer, got boolean True"),
        ("Count", "must be between 1 and 100, got 0"),
        (
            "Labels.bad key",
            "invalid label key 'bad key': expected a name of at most 63 letters, digits, '-', "
            "'_' or '.' that starts and ends with a letter or digit, optionally after a "
            "lowercase DNS prefix and '/', e.g. region or example.com/gpu-type",
        ),
        (
            "Constraints[0].Operator",
            "unknown operator 'inn'; expected one of: =, !=, exists, !, in, notin, gt, lt",
        ),
        ("Tasks[0].Netwrk", "unknown field (did you mean 'Network'?)"),
        ("Tasks[0].Engine.Params.Imag", "unknown field (did you mean 'Image'?)"),
        ("Tasks[0].Engine.Params.Image", "required field is missing"),
        (
            "Tasks[0].InputSources[0].Source.Params.Bucket",
            "invalid S3 bucket name 'Bad_Bucket': expected 3 to 63 lowercase letters, digits, "
            "'.' or '-', starting and ending with a letter or digit, e.g. my-results",
        ),
        (
            "Tasks[0].InputSources[0].Target",
            "invalid path 'inputs': expected an absolute path without '..' segments, "
            "e.g. /inputs/data",
        ),
        (
            "Tasks[0].InputSources[1].Source.Type",
            "unknown input source type 'ftp'; expected one of: s3, ipfs, urlDownload, inline",
        ),
        ("Tasks[0].Publisher.Params.Bucket", "required field is missing"),
        (
            "Tasks[0].Publisher.Params.Key",
            "invalid key template '{jobid}': unknown placeholder {jobid} (did you mean "
            "{jobID}?); known placeholders: {jobID}, {executionID}, {nodeID}, {date}, {time}",
        ),
        (
            "Tasks[0].Resources.CPU",
            "invalid CPU quantity '-1': must not be negative; expected a non-negative number "
            "of cores, or of millicores with an 'm' suffix, e.g. 0.5, 2 or 500m",
        ),
        (
            "Tasks[0].Resources.Memory",
            "invalid memory quantity '12Qi': unknown unit 'Qi'; expected a non-negative number "
            "with an optional unit (Ki, Mi, Gi, Ti, Pi or K, M, G, T, P, optionally followed "
            "by B), e.g. 512Mi or 1Gb",
        ),
        (
            "Tasks[0].Timeouts.ExecutionTimeout",
            "must be between 0 and 9223372036854775807, got -5",
        ),
    ]


def test_spec_error_message_lists_every_problem():
    with pytest.raises(SpecError) as info:
        Job.from_dict({"Name": 1, "Tasks": "x"})
    assert str(info.value) == (
        "invalid job spec (2 problem(s)):\n"
        "  - Name: expected a string, got integer 1\n"
        "  - Tasks: expected a list, got string 'x'"
    )


@pytest.mark.parametrize("count", [0, 2])
def test_exactly_one_task(count):
    task = minimal()["Tasks"][0]
    assert errors_of({"Tasks": [task] * count}) == [
        ("Tasks", f"expected exactly one task, got {count}")
    ]


def test_inputs_need_distinct_targets_apart_from_results():
    source = {"Source": {"Type": "ipfs", "Params": {"CID": CID}}, "Target": "/data"}
    data = minimal(
        InputSources=[source, source | {"Target": "/data/"}, source | {"Target": "/outputs"}],
        ResultPaths=[{"Name": "outputs", "Path": "/outputs"}],
    )
    assert errors_of(data) == [
        ("Tasks[0].InputSources[1].Target", "'/data' is already the target of InputSources[0]"),
        (
            "Tasks[0].InputSources[2].Target",
            "'/outputs' is inside ResultPaths[0]; inputs and results need separate "
            "directories, e.g. /inputs and /outputs",
        ),
    ]


@pytest.mark.parametrize("job_id", [None, JOB_ID])
def test_id_is_optional(job_id):
    data = minimal() | ({"ID": job_id} if job_id else {})
    job = Job.from_dict(data)
    assert job.id == job_id
    assert ("ID" in job.to_dict()) is (job_id is not None)


@pytest.mark.parametrize(
    "job_id", ["j-123", JOB_ID.upper(), "e-" + JOB_ID[2:], JOB_ID.replace("-4ba6", "-1ba6")]
)
def test_bad_ids_are_refused(job_id):
    assert errors_of(minimal() | {"ID": job_id}) == [
        ("ID", f"invalid job ID {job_id!r}: expected j- and a lowercase UUID4, or no ID")
    ]


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "ubuntu:22.04",
        "library/ubuntu",
        "ghcr.io/org/app:1.2",
        "localhost:5000/a/b_c__d-e.f",
        "registry.example.com:443/x@sha256:" + "a" * 64,
        "bacnode-test:busybox",
    ],
)
def test_valid_images(image):
    assert check_image(image) is None


@pytest.mark.parametrize(
    "image", ["", "Ubuntu", "a b", "ubuntu:", ":tag", "a//b", "ubuntu@sha256:xyz", "-a"]
)
def test_invalid_images(image):
    assert check_image(image) is not None


def test_network_host_is_read_as_full_and_domains_need_network():
    assert Job.from_dict(minimal(Network={"Type": "Host"})).task.network.type == "Full"
    assert errors_of(minimal(Network={"Domains": ["example.com"]})) == [
        (
            "Tasks[0].Network.Domains",
            "domains need network access; set Network.Type to Full or remove Domains",
        )
    ]


def test_non_s3_publishers_take_no_params():
    data = minimal(Publisher={"Type": "local", "Params": {"Bucket": "x"}})
    assert errors_of(data) == [
        (
            "Tasks[0].Publisher.Params.Bucket",
            "unknown field; the local publisher takes no parameters",
        )
    ]


def test_parse_job_document():
    assert parse_job_document(json.dumps(FULL)) == Job.from_dict(FULL)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"Name": "a",}',
            "invalid JSON at line 1 column 14: Expecting property name enclosed in double quotes",
        ),
        ("[]", "expected a JSON object at the top level, got list []"),
        ('{"Name": "a", "Name": "b"}', "invalid JSON: key 'Name' appears twice in one object"),
        ('{"Priority": NaN}', "invalid JSON: NaN is not allowed; use a number or a string"),
    ],
)
def test_parse_job_document_errors(text, message):
    with pytest.raises(SpecError) as info:
        parse_job_document(text)
    assert info.value.errors == [FieldError("", message)]


# --- property tests -------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9-]{1,10}[a-z0-9]", fullmatch=True)
segments = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,6}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)


def abs_path(prefix):
    return st.lists(segments, min_size=0, max_size=2).map(lambda parts: "/".join([prefix, *parts]))


@st.composite
def input_sources(draw, target):
    kind = draw(st.sampled_from(["s3", "ipfs", "urlDownload", "inline"]))
    if kind == "s3":
        params = {"Bucket": draw(names | st.just("noaa-goes16")), "Key": draw(st.text(max_size=10))}
        optional = {
            "Region": names,
            "VersionID": names,
            "Filter": st.text(min_size=1, max_size=5).map(re.escape),
            "Endpoint": st.just("http://127.0.0.1:8333"),
            "ChecksumSHA256": st.binary(min_size=32, max_size=32).map(
                lambda b: base64.b64encode(b).decode()
            ),
        }
        params |= draw(st.fixed_dictionaries({}, optional=optional))
    elif kind == "ipfs":
        params = {"CID": CID}
    elif kind == "urlDownload":
        params = {"URL": draw(segments.map(lambda s: f"https://example.com/{s}"))}
    else:
        params = {
            "URL": "data:text/plain;base64,"
            + base64.b64encode(draw(st.binary(max_size=20))).decode()
        }
    source = {
        "Source": {"Type": draw(st.sampled_from([kind, kind.upper()])), "Params": params},
        "Target": target,
    }
    if draw(st.booleans()):
        source["Alias"] = draw(names)
    return source


@st.composite
def job_documents(draw):
    targets = draw(st.lists(abs_path("/in"), max_size=3, unique_by=lambda p: p.rstrip("/")))
    sources = [draw(input_sources(target)) for target in targets]
    aliases = [s["Alias"] for s in sources if "Alias" in s]
    if len(set(aliases)) != len(aliases):
        for s in sources:
            s.pop("Alias", None)
    results = draw(
        st.lists(
            st.tuples(names, abs_path("/out")),
            max_size=2,
            unique_by=(lambda r: r[0], lambda r: r[1]),
        )
    )
    publisher = draw(
        st.one_of(
            st.none(),
            st.sampled_from(["ipfs", "local", "noop", "IPFS"]).map(lambda t: {"Type": t}),
            st.fixed_dictionaries(
                {
                    "Type": st.just("s3"),
                    "Params": st.fixed_dictionaries(
                        {
                            "Bucket": names,
                            "Key": st.sampled_from(["r/{jobID}", "{date}-{time}.tgz", "out/"]),
                        },
                        optional={
                            "Compress": st.sampled_from([True, False, "yes", "0"]),
                            "Region": names,
                            "Endpoint": st.just("https://s3.example.com"),
                        },
                    ),
                }
            ),
        )
    )
    task = {
        "Engine": {
            "Type": "docker",
            "Params": draw(
                st.fixed_dictionaries(
                    {"Image": st.sampled_from(["busybox", "ubuntu:22.04", "ghcr.io/org/tool:1.2"])},
                    optional={
                        "Entrypoint": st.lists(st.text(max_size=5), max_size=2),
                        "Parameters": st.lists(st.text(max_size=5), max_size=3),
                        "EnvironmentVariables": st.lists(
                            st.from_regex(r"[A-Z_][A-Z0-9_]{0,4}", fullmatch=True),
                            max_size=3,
                            unique=True,
                        ).map(lambda names_: [f"{n}=v" for n in names_]),
                        "WorkingDirectory": abs_path("/work"),
                    },
                )
            ),
        },
        "InputSources": sources,
        "ResultPaths": [{"Name": n, "Path": p} for n, p in results],
    }
    if publisher is not None:
        task["Publisher"] = publisher
    task |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "Name": names,
                "Resources": st.fixed_dictionaries(
                    {},
                    optional={
                        "CPU": st.one_of(
                            st.integers(0, 64_000).map(lambda m: f"{m}m"),
                            st.integers(0, 64),
                            st.sampled_from([0.5, 1.25, "0.125"]),
                        ),
                        "Memory": st.one_of(
                            st.just(0), st.integers(6 * 2**20, 2**40),
                            st.sampled_from(["512Mi", "1Gb", "1.5Gi"]),
                        ),
                        "Disk": st.integers(0, 2**45).map(str),
                        "GPU": st.one_of(st.integers(0, 8), st.integers(0, 8).map(str)),
                    },
                ),
                "Network": st.one_of(
                    st.just({"Type": "None"}),
                    st.fixed_dictionaries(
                        {"Type": st.sampled_from(["Full", "full", "Host"])},
                        optional={"Domains": st.lists(names, max_size=2)},
                    ),
                ),
                "Timeouts": st.fixed_dictionaries(
                    {},
                    optional={
                        "ExecutionTimeout": st.integers(0, 10**6),
                        "QueueTimeout": st.integers(0, 10**6),
                    },
                ),
            },
        )
    )
    constraint = st.one_of(
        st.tuples(names, st.sampled_from(["=", "!="]), names.map(lambda v: [v])),
        st.tuples(names, st.sampled_from(["in", "notin"]), st.lists(names, min_size=1, max_size=3)),
        st.tuples(names, st.sampled_from(["exists", "!"]), st.just([])),
        st.tuples(
            names, st.sampled_from(["gt", "lt"]), st.integers(-9, 99).map(lambda n: [str(n)])
        ),
    ).map(lambda c: {"Key": c[0], "Operator": c[1], "Values": c[2]})
    top = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "ID": st.uuids(version=4).map(lambda u: f"j-{u}"),
                "Name": st.text(max_size=10),
                "Namespace": names,
                "Type": st.just("batch"),
                "Priority": st.integers(0, 100),
                "Count": st.integers(1, 10),
                "Meta": st.dictionaries(
                    st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3
                ),
                "Labels": st.dictionaries(names, names, max_size=3),
                "Constraints": st.lists(constraint, max_size=3),
            },
        )
    )
    return top | {"Tasks": [task]}


def _walk(value):
    yield value
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


@settings(max_examples=200)
@given(job_documents())
def test_round_trip(document):
    job = Job.from_dict(document)
    normal = job.to_dict()
    assert Job.from_dict(normal) == job
    assert Job.from_dict(normal).to_dict() == normal
    assert all(isinstance(v, (str, int, bool, list, dict)) for v in _walk(normal))
    assert not any(isinstance(v, float) for v in _walk(normal))
    assert Job.from_dict(codec.decode(codec.encode(normal))) == job


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated_documents(draw):
    """A valid document with one value somewhere replaced by arbitrary JSON."""
    document = draw(job_documents())
    paths = []

    def collect(value, path):
        if isinstance(value, dict):
            for key, item in value.items():
                paths.append((*path, key))
                collect(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                paths.append((*path, i))
                collect(item, (*path, i))

    collect(document, ())
    path = draw(st.sampled_from(paths))
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = draw(json_values)
    return document


@settings(max_examples=300)
@given(mutated_documents())
def test_from_dict_raises_only_spec_error(document):
    try:
        job = Job.from_dict(document)
    except SpecError as exc:
        assert exc.errors and all(isinstance(e, FieldError) for e in exc.errors)
    else:
        assert Job.from_dict(job.to_dict()) == job


@given(json_values)
def test_from_dict_on_arbitrary_values_raises_only_spec_error(value):
    with pytest.raises(SpecError):
        Job.from_dict(value)


# --- Bacalhau's own documents: lower-case keys, Env, Meta, TotalTimeout, network types ----

#: testdata/jobs/docker-hello.yaml of Bacalhau v1.9.3, as its YAML decodes.
BACALHAU_DOCKER_HELLO = {
    "name": "A Simple Docker Job",
    "type": "batch",
    "count": 1,
    "tasks": [{
        "name": "My main task",
        "engine": {"type": "docker", "params": {
            "Image": "busybox:1.37.0",
            "Entrypoint": ["/bin/sh"],
            "Parameters": ["-c", "echo Hello Bacalhau!"],
        }},
    }],
}


def test_bacalhau_lower_case_keys_are_read_as_its_go_decoder_reads_them():
    job = Job.from_dict(BACALHAU_DOCKER_HELLO)
    assert job.name == "A Simple Docker Job"
    assert job.task.name == "My main task"
    assert job.task.engine.image == "busybox:1.37.0"
    assert job.task.engine.parameters == ("-c", "echo Hello Bacalhau!")
    assert Job.from_dict(job.to_dict()) == job
    assert "Tasks" in job.to_dict() and "tasks" not in job.to_dict()


def test_task_env_meta_and_total_timeout_round_trip():
    job = Job.from_dict({"Tasks": [{
        "Engine": {"Type": "docker", "Params": {"Image": "busybox",
                                                "EnvironmentVariables": ["A=1"]}},
        "Env": {"GREETING": "hi"}, "Meta": {"owner": "me"},
        "Timeouts": {"ExecutionTimeout": 600, "TotalTimeout": 300},
    }]})
    assert job.task.env == {"GREETING": "hi"}
    assert job.task.meta == {"owner": "me"}
    assert job.task.timeouts.total_timeout == 300
    assert job.task.timeouts.execution_limit == 300  # an execution cannot outlast its job
    assert Job.from_dict(job.to_dict()) == job


def test_task_env_that_repeats_an_engine_variable_or_has_a_bad_name_is_refused():
    with pytest.raises(SpecError) as info:
        Job.from_dict({"Tasks": [{
            "Engine": {"Type": "docker", "Params": {"Image": "busybox",
                                                    "EnvironmentVariables": ["A=1"]}},
            "Env": {"A": "2", "9LIVES": "x"},
        }]})
    assert [(e.path, e.message.split(":")[0]) for e in info.value.errors] == [
        ("Tasks[0].Env.A", "A is also set by Engine.Params.EnvironmentVariables; set it once"),
        ("Tasks[0].Env.9LIVES", "invalid environment variable name '9LIVES'"),
    ]


@pytest.mark.parametrize(("given", "read_as"), [
    ("Default", "None"), ("Bridge", "Full"), ("Host", "Full"), ("None", "None"),
])
def test_bacalhau_network_types_map_to_what_nodes_can_do(given: str, read_as: str):
    job = Job.from_dict({"Tasks": [{
        "Engine": {"Type": "docker", "Params": {"Image": "busybox"}},
        "Network": {"Type": given},
    }]})
    assert job.task.network.type == read_as


@pytest.mark.parametrize(("change", "where", "says"), [
    ({"InputSources": [{"Source": {"Type": "ipfs", "Params": {"CID": "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"}}, "Target": "/outputs"}]},  # noqa: E501
     "Tasks[0].InputSources[0].Target", "'/outputs' is inside the results directory"),
    ({"InputSources": [{"Source": {"Type": "ipfs", "Params": {"CID": "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"}}, "Target": "/outputs/in"}]},  # noqa: E501
     "Tasks[0].InputSources[0].Target", "'/outputs/in' is inside the results directory"),
    ({"InputSources": [{"Source": {"Type": "ipfs", "Params": {"CID": "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"}}, "Target": "/proc/x"}]},  # noqa: E501
     "Tasks[0].InputSources[0].Target", "'/proc/x' belongs to the container's system"),
    ({"InputSources": [{"Source": {"Type": "ipfs", "Params": {"CID": "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"}}, "Target": "/etc"}]},  # noqa: E501
     "Tasks[0].InputSources[0].Target", "'/etc' belongs to the container's system"),
    ({"Resources": {"Memory": "1"}}, "Tasks[0].Resources.Memory",
     "'1' is 1 bytes; a container needs at least 6Mi"),
    ({"InputSources": [{"Source": {"Type": "s3", "Params": {"Bucket": "data", "Filter": "(.*"}},
                        "Target": "/inputs"}]},
     "Tasks[0].InputSources[0].Source.Params.Filter", "invalid regular expression '(.*'"),
])
def test_specs_that_could_only_fail_at_run_time_are_refused_at_submit(change, where, says):
    task = {"Engine": {"Type": "docker", "Params": {"Image": "busybox"}}, **change}
    with pytest.raises(SpecError) as info:
        Job.from_dict({"Tasks": [task]})
    assert [(e.path, e.message[:len(says)]) for e in info.value.errors] == [(where, says)]


def test_default_timeout_applies_only_to_a_job_that_sets_none():
    bare = Job.from_dict({"Tasks": [{"Engine": {"Type": "docker", "Params": {"Image": "x"}}}]})
    assert bare.with_default_timeout(1800).task.timeouts.execution_timeout == 1800
    assert bare.with_default_timeout(0) == bare
    for own in ({"ExecutionTimeout": 5}, {"TotalTimeout": 7}):
        timed = Job.from_dict({"Tasks": [{"Engine": {"Type": "docker", "Params": {"Image": "x"}},
                                          "Timeouts": own}]})
        assert timed.with_default_timeout(1800) == timed


def test_count_is_at_most_max_count():
    from protocol.jobspec import MAX_COUNT

    base = {"Tasks": [{"Engine": {"Type": "docker", "Params": {"Image": "x"}}}]}
    assert Job.from_dict({**base, "Count": MAX_COUNT}).count == MAX_COUNT
    with pytest.raises(SpecError, match=f"Count: must be between 1 and {MAX_COUNT}, got 46"):
        Job.from_dict({**base, "Count": 2**62})
