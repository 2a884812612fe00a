"""Bacalhau's own Python client (``bacalhau-apiclient`` from PyPI) against a bacnode devnet.

Every ``/api/v1`` response is fetched twice: raw, and through the client's models. Each field
the raw JSON holds must come out of the client with the same value, except the few listed in
``NOT_IN_CLIENT_MODELS`` with the reason for each. A job is submitted and stopped through the
client too.
"""

from __future__ import annotations

import datetime
import json
import re
import urllib.request
from typing import Any

import pytest

from scripts.daemons import Daemon, wait_until

pytestmark = pytest.mark.integration

#: Fields the client (1.4.1) has no place for, by path pattern, and why.
NOT_IN_CLIENT_MODELS = {
    # Bacalhau v1.9 sends these; the newest client on PyPI predates them.
    r"(.*\.)?JobVersion": "v1.9 field, newer than the client",
    r"(.*\.)?SeqNum": "v1.9 field, newer than the client",
    r"(.*\.)?SupportedProtocols": "v1.9 field, newer than the client",
    r".*\.ConnectionState": "v1.9 field, newer than the client",
    # The node list is sent as both: Bacalhau's Go CLI reads "Nodes", this client "nodes".
    r"\.(Nodes|Node)": "node list and node: the same as nodes and node",
    # bacnode's own additions, documented in docs/bacalhau-compatibility.md.
    r"\.(Protocol|Python|Libp2p)": "agent/version: bacnode's protocol, Python and libp2p",
    r"(.*\.Info|)\.(Addresses|Roles)": "NodeInfo: libp2p addresses and bacnode roles",
    r".*\.(FirstSeen|LastSeen)": "NodeState: when this node first and last heard from it",
    r".*\.Reputation": "NodeState: this requester's record of a compute node",
    r".*\.ComputeNodeInfo\.UnavailableEngines": "NodeInfo: engines that cannot run now, why",
    r".*\.Requester": "Job: the node that accepted the job",
    r"\.Items\[\]\.(ExecutionID|NodeID|ExitCode|SignedRecord)":
        "results: the signed record bacnode get verifies downloads against",
}


#: Where the client's model disagrees with what Bacalhau's own server sends (its Go types
#: marshal these enums as strings; the client expects an object), so no server can satisfy
#: both it and Bacalhau's CLI: bacnode sends what Bacalhau sends.
CLIENT_MISMODELS = {
    r"\.nodes\[\]\.(Membership|Connection)": "NodeMembershipState/NodeConnectionState",
    r"\.node\.(Membership|Connection)": "NodeMembershipState/NodeConnectionState",
}


def _ignored(path: str, table: dict[str, str]) -> bool:
    return any(re.fullmatch(pattern, re.sub(r"\[\d+\]", "[]", path)) for pattern in table)


def _wire(value: Any) -> Any:
    """A client model back as JSON keys (its ``attribute_map``), recursively."""
    if getattr(value, "swagger_types", None) and hasattr(value, "attribute_map"):
        return {value.attribute_map[name]: _wire(getattr(value, name))
                for name in value.swagger_types if getattr(value, name) is not None}
    if isinstance(value, list):
        return [_wire(item) for item in value]
    if isinstance(value, dict):
        return {key: _wire(item) for key, item in value.items()}
    return value


def _differences(raw: Any, parsed: Any, path: str = "") -> list[str]:
    """Where the client's view of ``raw`` lost or changed something."""
    if isinstance(raw, dict):
        if not isinstance(parsed, dict):
            return [f"{path}: became {type(parsed).__name__}"]
        found = []
        for key, value in raw.items():
            here = f"{path}.{key}"
            if value is None:
                continue
            if key not in parsed:
                if not _ignored(here, NOT_IN_CLIENT_MODELS):
                    found.append(f"{here}: lost")
                continue
            if not _ignored(here, CLIENT_MISMODELS):
                found += _differences(value, parsed[key], here)
        return found
    if isinstance(raw, list):
        if not isinstance(parsed, list) or len(parsed) != len(raw):
            return [f"{path}: list changed"]
        return [d for i, (a, b) in enumerate(zip(raw, parsed, strict=True))
                for d in _differences(a, b, f"{path}[{i}]")]
    if isinstance(parsed, datetime.datetime):
        moment = datetime.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        return [] if moment == parsed else [f"{path}: {raw!r} became {parsed!r}"]
    return [] if raw == parsed else [f"{path}: {raw!r} became {parsed!r}"]


@pytest.fixture(scope="module")
def client(devnet: list[Daemon]) -> Any:
    import bacalhau_apiclient

    configuration = bacalhau_apiclient.Configuration()
    configuration.host = f"http://127.0.0.1:{devnet[0].api_port}"
    return bacalhau_apiclient.ApiClient(configuration)


def _check(client: Any, node: Daemon, path: str, model: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.api_port}{path}", timeout=30) as answer:
        body = answer.read()

    class Response:
        data = body.decode()

    parsed = client.deserialize(Response(), model)
    raw = json.loads(body)
    differences = _differences(raw, _wire(parsed))
    assert differences == [], f"{path}: " + "; ".join(differences)
    return parsed


def test_every_response_deserializes_with_nothing_lost(client: Any,
                                                       devnet: list[Daemon]) -> None:
    from bacalhau_apiclient import OrchestratorApi

    node = devnet[0]
    orchestrator = OrchestratorApi(client)
    body = {"Job": {"Type": "batch", "Count": 1, "Tasks": [{
        "Name": "main", "Engine": {"Type": "docker", "Params": {
            "Image": "busybox", "Parameters": ["sh", "-c", "echo contract"]}},
        "Publisher": {"Type": "local"}}]}}
    submitted = orchestrator.orchestratorput_job(body)
    job_id = submitted.job_id
    assert job_id.startswith("j-")

    def done() -> bool:
        return orchestrator.orchestratorget_job(job_id).job.state.state_type == "Completed"

    wait_until(done, timeout=60, what="the job to complete")

    version = _check(client, node, "/api/v1/agent/version", "ApiGetVersionResponse")
    assert version.git_version == "v0.1.0"
    info = _check(client, node, "/api/v1/agent/node", "NodeInfo")
    assert info.node_id == node.peer_id and info.node_type == "Compute"
    nodes = _check(client, node, "/api/v1/orchestrator/nodes", "ApiListNodesResponse")
    assert {state.info.node_id for state in nodes.nodes} == {n.peer_id for n in devnet}
    assert all(state.info.compute_node_info.max_capacity.cpu > 0 for state in nodes.nodes)
    one = _check(client, node, f"/api/v1/orchestrator/nodes/{node.peer_id}",
                 "ApiGetNodeResponse")
    assert one.node.info.node_id == node.peer_id
    jobs = _check(client, node, "/api/v1/orchestrator/jobs", "ApiListJobsResponse")
    assert job_id in {job.id for job in jobs.items}
    got = _check(client, node, f"/api/v1/orchestrator/jobs/{job_id}?include=executions,history",
                 "ApiGetJobResponse")
    assert got.job.tasks[0].engine.params["Image"] == "busybox"
    assert got.executions.items and got.history.items
    executions = _check(client, node, f"/api/v1/orchestrator/jobs/{job_id}/executions",
                        "ApiListJobExecutionsResponse")
    (completed,) = [e for e in executions.items if e.compute_state.state_type == 9]
    assert completed.run_output.stdout == "contract\n"
    history = _check(client, node, f"/api/v1/orchestrator/jobs/{job_id}/history",
                     "ApiListJobHistoryResponse")
    assert history.items[0].event.topic == "Submission"
    results = _check(client, node, f"/api/v1/orchestrator/jobs/{job_id}/results",
                     "ApiListJobResultsResponse")
    assert results.items[0].type == "urlDownload"

    running = orchestrator.orchestratorput_job({"Job": {"Type": "batch", "Tasks": [{
        "Name": "main", "Engine": {"Type": "docker", "Params": {
            "Image": "busybox", "Parameters": ["sleep", "60"]}}}]}})
    stopped = orchestrator.orchestratorstop_job(running.job_id, reason="contract test")
    assert stopped.evaluation_id
    wait_until(lambda: orchestrator.orchestratorget_job(running.job_id).job.state.state_type
               == "Stopped", timeout=30, what="the job to stop")


def test_openapi_document_describes_every_bacalhau_endpoint(devnet: list[Daemon]) -> None:
    url = f"http://127.0.0.1:{devnet[0].api_port}/api/v1/openapi.json"
    with urllib.request.urlopen(url, timeout=30) as answer:
        document = json.loads(answer.read())
    schemas = document["components"]["schemas"]
    expected = {
        ("get", "/api/v1/agent/version"): "BuildVersionInfoModel",
        ("get", "/api/v1/agent/node"): "NodeInfoModel",
        ("get", "/api/v1/orchestrator/nodes"): "ListNodesResponse",
        ("get", "/api/v1/orchestrator/jobs"): "ListJobsResponse",
        ("put", "/api/v1/orchestrator/jobs"): "PutJobResponse",
        ("get", "/api/v1/orchestrator/jobs/{job_id}"): "GetJobResponse",
        ("get", "/api/v1/orchestrator/jobs/{job_id}/executions"): "ListJobExecutionsResponse",
        ("get", "/api/v1/orchestrator/jobs/{job_id}/history"): "ListJobHistoryResponse",
        ("get", "/api/v1/orchestrator/jobs/{job_id}/results"): "ListJobResultsResponse",
        ("delete", "/api/v1/orchestrator/jobs/{job_id}"): "StopJobResponse",
    }
    for (method, path), schema in expected.items():
        responses = document["paths"][path][method]["responses"]
        ok = responses["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ok == f"#/components/schemas/{schema}", (method, path, ok)
        assert responses["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/ApiError")
    # The shapes Bacalhau's CLI depends on are in the document, with their types.
    execution = schemas["ExecutionStateValue"]["properties"]["StateType"]
    assert execution["type"] == "integer"
    assert schemas["ResourcesModel"]["properties"]["CPU"]["type"] == "number"
    assert schemas["JobHistory"]["properties"]["Time"]["anyOf"][0]["type"] == "string"
