"""What an operator sees: Prometheus metrics, JSON logs, readiness, dockerd going away,
SIGHUP, and the web dashboard in a real headless Chromium.

Real daemons on loopback and the real dockerd. "dockerd goes away" for one daemon only:
it reaches dockerd through a unix socket this test forwards (``DockerSocketProxy``), and
the test closes that socket; the daemon's Docker client then really fails, as it would
if dockerd stopped, while the other daemons keep running jobs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.daemons import Daemon, DaemonPool, wait_until

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
INLINE_DATA = b"staged through the inline backend\n"


class DockerSocketProxy:
    """A unix socket forwarding to the real dockerd's, which can be closed and reopened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        self.target = host.removeprefix("unix://")
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> DockerSocketProxy:
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """dockerd is gone: no new connection, and the open ones are cut."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.path.unlink(missing_ok=True)
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                connection.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def docker_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerSocketProxy]:
    proxy = DockerSocketProxy(tmp_path_factory.mktemp("docker-proxy") / "docker.sock").start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, busybox_image: str,
        docker_proxy: DockerSocketProxy) -> Iterator[dict[str, Daemon]]:
    """``main`` (requester and compute, JSON logs at INFO), ``picky`` (runs only alpine
    images; labels from its config file), ``fragile`` (reaches dockerd through the proxy)."""
    with DaemonPool(tmp_path_factory.mktemp("operating")) as pool:
        main = pool.new("main", args=["--labels", "zone=main", "--log-format", "json",
                                      "--log-level", "INFO"])
        picky = pool.new("picky", peers=[main], args=["--compute", "--allowed-images",
                                                      "alpine*"])
        picky.data_dir.mkdir(parents=True, exist_ok=True)
        (picky.data_dir / "config.yaml").write_text("labels:\n  zone: picky\n")
        fragile = pool.new("fragile", peers=[main], args=["--compute", "--labels",
                                                          "zone=fragile"],
                           env={"DOCKER_HOST": f"unix://{docker_proxy.path}"})
        nodes = pool.start_all([main, picky, fragile])
        ids = {node.peer_id for node in nodes}
        wait_until(lambda: main.connected() >= ids, timeout=30, what="the 3-node mesh")
        yield {"main": main, "picky": picky, "fragile": fragile}


def _put_job(node: Daemon, job: dict[str, Any]) -> str:
    body = json.dumps({"Job": job}).encode()
    request = urllib.request.Request(f"{node.api_url}/api/v1/orchestrator/jobs", data=body,
                                     method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())["JobID"]


def _job(command: str, *, zone: str | None = None, **task: Any) -> dict[str, Any]:
    return {
        "Type": "batch", "Count": 1,
        "Constraints": ([{"Key": "zone", "Operator": "=", "Values": [zone]}] if zone else []),
        "Tasks": [{"Name": "main", "Engine": {"Type": "docker", "Params": {
            "Image": "busybox", "Entrypoint": ["sh", "-c"], "Parameters": [command]}},
            "Publisher": {"Type": "ipfs"}, **task}],
    }


def _state(node: Daemon, job_id: str) -> str:
    return node.api(f"/api/v1/orchestrator/jobs/{job_id}")["Job"]["State"]["StateType"]


def _wait_terminal(node: Daemon, job_id: str, timeout: float = 60) -> str:
    return wait_until(lambda: (s := _state(node, job_id)) in ("Completed", "Failed", "Stopped")
                      and s, timeout=timeout, what=f"job {job_id} to end")


def _executions(node: Daemon, job_id: str) -> list[dict[str, Any]]:
    return node.api(f"/api/v1/orchestrator/jobs/{job_id}/executions")["Items"]


def test_metrics_count_what_happened(ops: dict[str, Daemon]) -> None:
    main, picky = ops["main"], ops["picky"]
    before = {name: node.metrics() for name, node in ops.items()}
    ran = [_put_job(main, _job("echo metrics")) for _ in range(3)]
    inline = _put_job(main, _job("cat /inputs/note", InputSources=[{
        "Source": {"Type": "inline", "Params": {
            "URL": "data:text/plain;base64," + base64.b64encode(INLINE_DATA).decode()}},
        "Target": "/inputs/note"}]))
    # picky is the only node in its zone and runs only alpine images: it declines.
    refused = _put_job(main, _job("true", zone="picky"))
    for job_id in [*ran, inline]:
        assert _wait_terminal(main, job_id) == "Completed"
    wait_until(lambda: _state(main, refused) in ("Failed", "Queued"), timeout=30,
               what="the refused job to fail or queue")
    after = {name: node.metrics() for name, node in ops.items()}

    def grew(node: str, sample: str) -> float:
        return after[node].get(sample, 0) - before[node].get(sample, 0)

    # Jobs by state: the store's counts, as the API lists them (the refused job may still
    # move from Queued to Failed between a scrape and a listing: look until both agree).
    def jobs_agree() -> bool:
        scraped = main.metrics()
        listed = main.api("/api/v1/orchestrator/jobs?limit=1000")["Items"]
        counts = Counter(job["State"]["StateType"] for job in listed)
        return all(scraped[f'bacnode_jobs{{state="{state}"}}'] == counts.get(state, 0)
                   for state in ("Pending", "Queued", "Running", "Completed", "Failed",
                                 "Stopped"))

    wait_until(jobs_agree, timeout=15, what="bacnode_jobs to match the jobs listed")
    # Each completed execution ran one container on its node, and published its outputs
    # (stdout, stderr, exitCode: "metrics\n" + "" + "0") to IPFS there.
    ran_on = Counter(e["NodeID"] for job_id in ran for e in _executions(main, job_id)
                     if e["ComputeState"]["StateType"] == 9)
    (inline_execution,) = [e for e in _executions(main, inline)
                           if e["ComputeState"]["StateType"] == 9]
    for name, node in ops.items():
        runs = ran_on[node.peer_id] + (inline_execution["NodeID"] == node.peer_id)
        assert grew(name, 'bacnode_container_run_seconds_count{engine="docker",outcome="ok"}'
                    ) == runs, name
        assert grew(name, 'bacnode_published_bytes_total{backend="ipfs"}') == (
            ran_on[node.peer_id] * len("metrics\n0")
            + (inline_execution["NodeID"] == node.peer_id) * (len(INLINE_DATA) + 1)), name
        staged = grew(name, 'bacnode_staged_bytes_total{backend="inline"}')
        assert staged == (len(INLINE_DATA) if inline_execution["NodeID"] == node.peer_id
                          else 0), name
    # picky's decline, counted by its reason on both ends.
    assert grew("picky", 'bacnode_bid_declines_total{reason="policy"}') >= 1
    # main is the only requester: every bid any node sent, main received.
    for answer in ("accept", "decline"):
        assert sum(grew(name, f'bacnode_bids_sent_total{{answer="{answer}"}}') for name in ops
                   ) == grew("main", f'bacnode_bids_received_total{{answer="{answer}"}}')
    assert grew("main", 'bacnode_bids_received_total{answer="accept"}') >= 4
    # Gossip: heartbeats arrive validated. fragile's load changed when it bid, and a node
    # heartbeats on a change in load, at most once a second: that one may come after the
    # jobs ended (picky, which only declined, may send none before its interval).
    validated = 'bacnode_gossip_messages_validated_total{type="node.info"}'
    wait_until(lambda: main.metrics().get(validated, 0) > before["main"].get(validated, 0),
               timeout=30, what="a peer's heartbeat to arrive validated")
    # Two peers, both direct.
    assert after["main"]['bacnode_peers_connected{kind="direct"}'] == 2
    assert after["main"]['bacnode_peers_connected{kind="relayed"}'] == 0
    assert grew("main", "bacnode_store_commit_seconds_count") >= 5
    assert after["main"]["process_resident_memory_bytes"] > 10 * 2**20
    del picky


def test_json_logs_carry_job_execution_and_peer_ids(ops: dict[str, Daemon]) -> None:
    main = ops["main"]
    job_id = _put_job(main, _job("echo logged", zone="main"))
    assert _wait_terminal(main, job_id) == "Completed"
    (execution,) = [e for e in _executions(main, job_id)
                    if e["ComputeState"]["StateType"] == 9]
    urllib.request.urlopen(f"{main.api_url}/api/v1/agent/alive", timeout=5).read()

    def records() -> list[dict[str, Any]]:
        written = main.stderr
        # Whole lines only: the daemon may be writing the last one as it is read.
        lines = [line for line in written[:written.rfind("\n") + 1].splitlines()
                 if line.strip()]
        bad = [line for line in lines if not line.startswith("{")]
        assert not bad, bad[:5]
        return [json.loads(line) for line in lines]  # every line is one JSON object

    entries = wait_until(lambda: (found := records()) and any(
        e.get("path") == "/api/v1/agent/alive" for e in found) and found,
        timeout=10, what="the access log record")
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry)
    tagged = [e for e in entries if e.get("job_id") == job_id]
    assert any(e.get("execution_id") == execution["ID"] and e["logger"] == "bacnode.compute"
               and "Completed" in e["message"] for e in tagged), tagged
    assert all(e.get("peer_id") for e in tagged if e["logger"] == "bacnode.compute")
    access = [e for e in entries if e["logger"] == "bacnode.access"]
    assert any(e["method"] == "PUT" and e["path"] == "/api/v1/orchestrator/jobs"
               and e.get("status") == 200 and e.get("duration_ms", -1) >= 0 for e in access)


def _ready(node: Daemon) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{node.api_url}/readyz", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_node_whose_dockerd_goes_away_stops_bidding_and_says_why(
        ops: dict[str, Daemon], docker_proxy: DockerSocketProxy) -> None:
    main, fragile = ops["main"], ops["fragile"]
    assert _ready(fragile) == (200, {"Ready": True, "Checks": {
        "started": "ok", "store": "ok", "mesh": "ok", "docker": "ok"}})
    docker_proxy.stop()
    try:
        status, answer = wait_until(lambda: (r := _ready(fragile))[0] == 503 and r,
                                    timeout=20, what="fragile to report dockerd gone")
        assert answer["Checks"]["docker"].startswith("dockerd does not answer")
        assert (answer["Checks"]["store"], answer["Checks"]["mesh"]) == ("ok", "ok")
        wait_until(lambda: "docker" in main.api_nodes()[fragile.peer_id]["Info"][
            "ComputeNodeInfo"]["UnavailableEngines"], timeout=20,
            what="main to hear that fragile cannot run docker jobs")
        listing = main.cli("node", "list")
        (row,) = [line for line in listing.stdout.splitlines() if fragile.peer_id in line]
        assert "docker (unavailable: dockerd does not answer" in row
        page = _chromium("--virtual-time-budget=10000", "--dump-dom", f"{main.api_url}/#/nodes")
        (row,) = [r for r in page.stdout.split("<tr") if f'data-node="{fragile.peer_id}"' in r]
        assert 'class="state-unavailable"' in row and "docker (unavailable: dockerd does not " \
            "answer" in row, row
        # A job only fragile could take is not placed there, and says why.
        refused = _put_job(main, _job("echo refused", zone="fragile"))
        assert _wait_terminal(main, refused) == "Failed"
        job = main.api(f"/api/v1/orchestrator/jobs/{refused}")["Job"]
        assert "engine 'docker' is unavailable here: dockerd does not answer" in job[
            "State"]["Message"]
        assert not [e for e in _executions(main, refused)
                    if e["ComputeState"]["StateType"] != 8]
    finally:
        docker_proxy.start()
    wait_until(lambda: _ready(fragile)[0] == 200, timeout=20, what="fragile to be ready again")
    wait_until(lambda: main.api_nodes()[fragile.peer_id]["Info"]["ComputeNodeInfo"][
        "UnavailableEngines"] == {}, timeout=20, what="main to hear that fragile is back")
    job_id = _put_job(main, _job("echo back", zone="fragile"))
    assert _wait_terminal(main, job_id) == "Completed"
    assert main.api_nodes()[fragile.peer_id]["Info"]["ComputeNodeInfo"][
        "UnavailableEngines"] == {}


def test_sighup_reloads_labels_and_keeps_the_old_config_when_the_new_is_bad(
        ops: dict[str, Daemon]) -> None:
    main, picky = ops["main"], ops["picky"]
    config = picky.data_dir / "config.yaml"
    config.write_text("labels:\n  zone: picky\n  tier: gold\nmax_jobs: 1\n")
    assert picky.process is not None
    picky.process.send_signal(signal.SIGHUP)
    wait_until(lambda: main.api_nodes()[picky.peer_id]["Info"]["Labels"] == {
        "zone": "picky", "tier": "gold"}, timeout=15, what="the new labels to reach main")
    assert "reloaded the config: labels, max_jobs" in picky.stderr
    config.write_text("labels: [unclosed\n")
    picky.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "config not reloaded, the old one stays" in picky.stderr, timeout=10,
               what="picky to refuse the bad config")
    assert picky.running
    assert picky.api("/api/v1/agent/node")["Labels"] == {"zone": "picky", "tier": "gold"}


def _chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Headless Chromium that can reach only loopback: every other host name fails to
    resolve, and everything but loopback goes to a proxy on a closed local port."""
    assert CHROMIUM, "chromium is not installed (scripts/setup.sh installs it)"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--proxy-server=http://127.0.0.1:9", *args],
        capture_output=True, text=True, timeout=timeout, check=False)


def test_the_dashboard_shows_a_job_completed_with_its_logs_and_cid(
        ops: dict[str, Daemon], tmp_path: Path) -> None:
    main = ops["main"]
    submitted = main.cli("docker", "run", "--wait", "--id-only", "busybox", "--", "sh", "-c",
                         "echo dashboard-stdout; echo dashboard-stderr >&2")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    (result,) = main.api(f"/api/v1/orchestrator/jobs/{job_id}/results")["Items"]
    cid = result["Params"]["CID"]
    page = _chromium("--virtual-time-budget=10000", "--dump-dom",
                     f"{main.api_url}/#/jobs/{job_id}")
    assert page.returncode == 0, page.stderr[-2000:]
    dom = page.stdout
    assert 'id="job-state"><span class="state state-Completed">Completed</span>' in dom
    assert "dashboard-stdout" in dom and "dashboard-stderr" in dom
    assert f"ipfs://{cid}" in dom
    assert 'id="job-timeline"' in dom and "bid accepted from" in dom

    overview = _chromium("--virtual-time-budget=10000", "--dump-dom", f"{main.api_url}/")
    assert overview.returncode == 0, overview.stderr[-2000:]
    rows = {node.peer_id: [r for r in overview.stdout.split("<tr")
                           if f'data-node="{node.peer_id}"' in r] for node in ops.values()}
    assert all(len(found) == 1 for found in rows.values()), rows
    # How main reaches each peer (itself: no transport).
    assert "direct" not in rows[main.peer_id][0]
    for name in ("picky", "fragile"):
        assert 'class="muted transport"> direct</span>' in rows[ops[name].peer_id][0]
        assert main.api_nodes()[ops[name].peer_id]["ConnectionState"]["Transport"] == "direct"
    assert f'data-job="{job_id}"' in overview.stdout
    assert 'id="queue-depth"' in overview.stdout

    screenshot = tmp_path / "dashboard.png"
    shot = _chromium("--virtual-time-budget=10000", "--window-size=1280,900",
                     f"--screenshot={screenshot}", f"{main.api_url}/")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000
