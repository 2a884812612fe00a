"""docs/operating.md's config reference is generated from the config model: it must be
current, and it must list every setting."""

from __future__ import annotations

import dataclasses

from node.config import NodeConfig
from node.config_reference import DEFAULT_FILE, main, reference


def test_the_config_reference_in_docs_is_current() -> None:
    assert main(["--check", str(DEFAULT_FILE)]) == 0, (
        "run `python -m node.config_reference` and commit docs/operating.md")


def test_every_setting_has_a_row_with_its_flag_and_variable() -> None:
    table = reference()
    for field in dataclasses.fields(NodeConfig):
        (row,) = [line for line in table.splitlines() if line.startswith(f"| `{field.name}` |")]
        assert f"`BACNODE_{field.name.upper()}`" in row or field.name == "networks"
    assert "| `api_key` | (file or environment only) |" in table
    assert "| `labels` | `--labels` | `BACNODE_LABELS` | (none) | reloads |" in table
