"""How commands print: tables, JSON or YAML, with the output flags Bacalhau's CLI takes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

OUTPUT_FORMATS = ("table", "json", "yaml")


def output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--output table|json|yaml``, ``--hide-header`` and ``--no-style``, as Bacalhau's."""
    command = click.option("--no-style", is_flag=True,
                           help="plain output (bacnode's tables are never styled)")(command)
    command = click.option("--hide-header", is_flag=True,
                           help="leave out the table's header")(command)
    return click.option("--output", type=click.Choice(OUTPUT_FORMATS), default="table",
                        show_default=True)(command)


def render(value: Any, output: str) -> str:
    if output == "yaml":
        import yaml

        return yaml.safe_dump(value, sort_keys=False).rstrip()
    return json.dumps(value, indent=2)


def table(headers: list[str], rows: list[list[str]], *, hide_header: bool = False) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in ([] if hide_header else [headers]) + rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def show(value: Any, output: str, headers: list[str], rows: list[list[str]], *,
         hide_header: bool = False) -> None:
    """Print ``value`` as JSON/YAML, or ``rows`` as a table."""
    if output == "table":
        click.echo(table(headers, rows, hide_header=hide_header))
    else:
        click.echo(render(value, output))
