"""``node.config.load_config``: flags > config file > BACNODE_* variables > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import (
    DEFAULT_API_PORT,
    DEFAULT_LISTEN,
    ConfigError,
    NodeConfig,
    default_max_jobs,
    load_config,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def load(flags: dict | None = None, env: dict | None = None, **kwargs) -> NodeConfig:
    """``load_config`` isolated from this machine: no real environment, no ~/.bacnode."""
    return load_config(flags or {}, environ=env or {}, **kwargs)


def test_defaults(tmp_path):
    config = load({"data_dir": str(tmp_path)})
    assert config.api_port == DEFAULT_API_PORT
    assert config.listen == DEFAULT_LISTEN
    assert config.peers == ()
    assert config.roles == ("requester", "compute")
    assert config.mdns is True
    assert config.heartbeat_seconds == 15.0
    assert config.missed_heartbeats == 2
    assert config.key_path == tmp_path / "node.key"


def test_flags_beat_config_file_beat_environment_beat_defaults(tmp_path):
    config_file = write(tmp_path / "node.yaml", "api_port: 2000\nlabels: {zone: file}\n"
                        "max_jobs: 3\n")
    env = {"BACNODE_API_PORT": "1000", "BACNODE_LABELS": "zone=env", "BACNODE_MAX_JOBS": "7",
           "BACNODE_HEARTBEAT_SECONDS": "0.25", "BACNODE_CONFIG": str(config_file)}
    config = load({"data_dir": str(tmp_path), "api_port": 3000}, env)
    assert config.api_port == 3000  # flag over file over env
    assert config.labels == {"zone": "file"}  # file over env
    assert config.max_jobs == 3  # file over env
    assert config.heartbeat_seconds == 0.25  # env over default
    assert config.listen == DEFAULT_LISTEN  # default when nobody says

    without_flag = load({"data_dir": str(tmp_path)}, env)
    assert without_flag.api_port == 2000
    without_file = load({"data_dir": str(tmp_path)}, {**env, "BACNODE_CONFIG": ""})
    assert without_file.api_port == 1000
    assert without_file.labels == {"zone": "env"}


def test_config_yaml_in_the_data_dir_is_read_without_being_named(tmp_path):
    write(tmp_path / "config.yaml", "api-port: 4321\nmdns: false\npeers:\n  - /ip4/1.2.3.4/tcp/1\n")
    config = load({"data_dir": str(tmp_path)})
    assert (config.api_port, config.mdns, config.peers) == (4321, False, ("/ip4/1.2.3.4/tcp/1",))
    # The data dir may itself come from the environment.
    assert load(env={"BACNODE_DATA_DIR": str(tmp_path)}).api_port == 4321


def test_environment_booleans_and_lists(tmp_path):
    config = load({"data_dir": str(tmp_path)}, {
        "BACNODE_MDNS": "false", "BACNODE_COMPUTE": "no",
        "BACNODE_PEERS": "/ip4/1.2.3.4/tcp/1/p2p/a, /ip4/1.2.3.5/tcp/1/p2p/b",
    })
    assert config.mdns is False
    assert config.roles == ("requester",)
    assert config.peers == ("/ip4/1.2.3.4/tcp/1/p2p/a", "/ip4/1.2.3.5/tcp/1/p2p/b")


def test_peer_none_clears_bootstrap_peers_from_file_and_environment(tmp_path):
    write(tmp_path / "config.yaml", "peers: [/ip4/1.2.3.4/tcp/1/p2p/x]\n")
    env = {"BACNODE_PEERS": "/ip4/1.2.3.5/tcp/1/p2p/y"}
    assert load({"data_dir": str(tmp_path)}, env).peers == ("/ip4/1.2.3.4/tcp/1/p2p/x",)
    assert load({"data_dir": str(tmp_path), "peers": ("none",)}, env).peers == ()
    assert load({"data_dir": str(tmp_path), "peers": ("NONE",)}, env).peers == ()


def test_unknown_config_key_lists_the_known_ones(tmp_path):
    write(tmp_path / "config.yaml", "api_port: 1\napi_prot: 2\n")
    with pytest.raises(ConfigError) as error:
        load({"data_dir": str(tmp_path)})
    message = str(error.value)
    assert "api_prot" in message
    assert str(tmp_path / "config.yaml") in message
    for known in ("api_port", "data_dir", "listen", "peers", "swarm_key", "limit_memory"):
        assert known in message


def test_bad_yaml_names_the_file(tmp_path):
    write(tmp_path / "config.yaml", "api_port: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as error:
        load({"data_dir": str(tmp_path)})
    assert str(tmp_path / "config.yaml") in str(error.value)
    assert "line 2" in str(error.value)  # where, in words
    assert "\n" not in str(error.value)  # the CLI prints errors on one line


def test_config_file_must_be_a_mapping(tmp_path):
    write(tmp_path / "config.yaml", "- api_port\n")
    with pytest.raises(ConfigError, match="mapping"):
        load({"data_dir": str(tmp_path)})


def test_named_config_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load({"data_dir": str(tmp_path), "config": str(tmp_path / "missing.yaml")})


@pytest.mark.parametrize("flag, value, words", [
    ("limit_memory", "4Gx", ["--limit-memory", "4Gx", "invalid memory quantity"]),
    ("limit_memory", "-1Gi", ["--limit-memory", "-1Gi"]),
    ("limit_cpu", "two", ["--limit-cpu", "two"]),
    ("limit_disk", "10Zz", ["--limit-disk", "10Zz", "invalid disk quantity"]),
])
def test_bad_quantity_names_the_flag_and_value(tmp_path, flag, value, words):
    with pytest.raises(ConfigError) as error:
        load({"data_dir": str(tmp_path), flag: value})
    for word in words:
        assert word in str(error.value)


def test_good_quantities_are_kept(tmp_path):
    config = load({"data_dir": str(tmp_path), "limit_memory": "4Gi", "limit_cpu": "1500m"})
    assert (config.limit_memory, config.limit_cpu) == ("4Gi", "1500m")


@pytest.mark.parametrize("env, words", [
    ({"BACNODE_API_PORT": "http"}, ["$BACNODE_API_PORT", "'http'"]),
    ({"BACNODE_API_PORT": "70000"}, ["$BACNODE_API_PORT", "out of range"]),
    ({"BACNODE_MDNS": "maybe"}, ["$BACNODE_MDNS", "true or false"]),
    ({"BACNODE_HEARTBEAT_SECONDS": "0"}, ["$BACNODE_HEARTBEAT_SECONDS"]),
    ({"BACNODE_MISSED_HEARTBEATS": "1"}, ["$BACNODE_MISSED_HEARTBEATS", "at least 2"]),
])
def test_bad_environment_value_names_the_variable(tmp_path, env, words):
    with pytest.raises(ConfigError) as error:
        load({"data_dir": str(tmp_path)}, env)
    for word in words:
        assert word in str(error.value)


def test_bad_value_in_config_file_names_the_file(tmp_path):
    write(tmp_path / "config.yaml", "max_jobs: many\n")
    with pytest.raises(ConfigError) as error:
        load({"data_dir": str(tmp_path)})
    assert str(tmp_path / "config.yaml") in str(error.value)
    assert "'many'" in str(error.value)


def test_a_node_needs_a_role(tmp_path):
    with pytest.raises(ConfigError, match="orchestrator, a compute node, or both"):
        load({"data_dir": str(tmp_path), "orchestrator": False, "compute": False})


def test_unusable_data_dir_is_a_config_error_not_a_crash(tmp_path):
    # A name too long for the file system: looking for config.yaml in it fails with
    # ENAMETOOLONG, which must become a message, not a traceback.
    with pytest.raises(ConfigError, match="data dir"):
        load({"data_dir": str(tmp_path / ("d" * 300))})


def test_default_execution_timeout_is_a_setting(tmp_path):
    assert load({"data_dir": str(tmp_path)}).default_execution_timeout == 1800
    env = {"BACNODE_DEFAULT_EXECUTION_TIMEOUT": "60"}
    assert load({"data_dir": str(tmp_path)}, env).default_execution_timeout == 60
    with pytest.raises(ConfigError, match="--default-execution-timeout: -1 is out of range"):
        load({"data_dir": str(tmp_path), "default_execution_timeout": -1})


def test_executions_at_once_default_to_as_many_as_bacalhau_runs(tmp_path):
    import os

    # Bacalhau offers 80 % of the CPUs and gives a job that asks for none 500m.
    assert [default_max_jobs(cpus) for cpus in (1, 2, 4, 8)] == [1, 3, 6, 12]
    assert load({"data_dir": str(tmp_path)}).max_jobs == default_max_jobs(os.cpu_count() or 1)
    assert load({"data_dir": str(tmp_path), "max_jobs": 0}).max_jobs == 0  # no limit


def test_requesters_to_accept_or_reject_are_peer_ids(tmp_path):
    from protocol.examples import KEYS

    friend = KEYS[0].peer_id
    config = load({"data_dir": str(tmp_path), "accept_jobs_from": f"{friend}, {friend}",
                   "max_jobs_per_requester": 2})
    assert config.accept_jobs_from == (friend, friend) and config.max_jobs_per_requester == 2
    with pytest.raises(ConfigError, match=r"--reject-jobs-from: 'bob' is not a peer ID"):
        load({"data_dir": str(tmp_path), "reject_jobs_from": "bob"})


def test_a_network_preset_adds_its_bootstrap_peers_from_the_config_file(tmp_path) -> None:
    first = "/ip4/10.0.0.2/tcp/1235/p2p/12D3KooWGfF445wvpKQq23UZEKYTnAwmAAHB7QCiUhxX6p8cbWvC"
    second = ("/dns4/boot.example.org/tcp/1235/p2p/"
              "12D3KooWH4Ttb42AxpBSPhkEMHvRLGFhzxopJtwSECrrw43krVWV")
    path = tmp_path / "config.yaml"
    path.write_text(f"networks:\n  lab: [{first}]\n  public:\n    - {second}\n")
    config = load_config({"network": "public", "config": str(path)}, environ={})
    assert config.peers == (second,)
    both = load_config({"network": "lab", "peers": (second,), "config": str(path)}, environ={})
    assert both.peers == (first, second)  # the preset's, then the flag's
    with pytest.raises(ConfigError, match=r"--network 'moon' is not in the config file's "
                                          r"networks \(known: lab, public\)"):
        load_config({"network": "moon", "config": str(path)}, environ={})
    path.write_text("networks: [not, a, mapping]\n")
    with pytest.raises(ConfigError, match="give a mapping of network name"):
        load_config({"config": str(path)}, environ={})
