"""Which API key the CLI sends, and where: a local daemon's key file never leaves the machine."""

from __future__ import annotations

from cli.client import ApiClient


def test_the_local_key_file_goes_only_to_an_api_on_this_machine(tmp_path, monkeypatch):
    (tmp_path / "api-key").write_text("local-secret-key-0123\n")
    monkeypatch.setenv("BACNODE_DATA_DIR", str(tmp_path))
    for name in ("BACNODE_API_KEY", "BACALHAU_API_KEY", "BACNODE_API_HOST", "BACNODE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    local = ApiClient(host="127.0.0.1", port=1234)
    assert local.headers == {"Authorization": "Bearer local-secret-key-0123"}
    assert ApiClient(host="10.1.2.3", port=1234).headers == {}
    monkeypatch.setenv("BACALHAU_API_KEY", "given-on-purpose")
    assert ApiClient(host="10.1.2.3", port=1234).headers == {
        "Authorization": "Bearer given-on-purpose"}
