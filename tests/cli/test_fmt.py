"""One formatter for values and one sanitizer for hostile text (issue 9, #9)."""

from __future__ import annotations

import io
import tomllib

import pytest
from rich.console import Console
from rich.table import Table

from logpipe_cli.cli import fmt

HOSTILE = "x\x1b]52;c;aGk=\x07\x1b[2K[red]boom[/red] :smile: \u202eevil\x9b\n"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain", "plain"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
        ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),
        ("\u202eevil", "\\u202eevil"),
        ("café 日本", "café 日本"),
    ],
)
def test_visible_escapes_controls_only(raw: str, shown: str) -> None:
    assert fmt.visible(raw) == shown


def test_inert_text_prints_as_written_in_a_table() -> None:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    table = Table()
    table.add_column("v", overflow="fold")
    table.add_row(fmt.inert(HOSTILE))
    console.print(table)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\x9b" not in out
    assert "[red]boom[/red]" in out  # markup shown, not applied
    assert ":smile:" in out  # no emoji substitution
    assert "\\x1b]52;c;aGk=\\x07" in out


@pytest.mark.parametrize(
    ("n", "noun", "shown"),
    [(0, "event", "0 events"), (1, "event", "1 event"), (1234, "key", "1,234 keys")],
)
def test_count_plurals_and_separators(n: int, noun: str, shown: str) -> None:
    assert fmt.count(n, noun) == shown


@pytest.mark.parametrize(
    ("n", "label"),
    [(0, "0 B"), (1023, "1,023 B"), (1024, "1.0 KiB"), (3 * 1024**3, "3.0 GiB")],
)
def test_size(n: int, label: str) -> None:
    assert fmt.size(n) == label


def test_numbers_and_times() -> None:
    assert fmt.number(1234567) == "1,234,567"
    assert fmt.number(12345.678, 1) == "12,345.7"
    assert fmt.moment(1_700_000_000) == "2023-11-14 22:13:20 UTC"
    assert fmt.event_time(1_700_000_000) == "2023-11-14 22:13:20 UTC"
    assert fmt.event_time("\x1b[2Jsoon") == '"\\u001b[2Jsoon"'
    assert fmt.event_time(True) == "true"
    assert fmt.ago(None, 0) == "never"


@pytest.mark.parametrize(
    ("value", "toml"),
    [
        (True, "true"),
        (False, "false"),
        (3000, "3000"),
        (1048576, "1_048_576"),
        (5.0, "5.0"),
        ("logs", '"logs"'),
        ('a"b', '"a\\"b"'),
    ],
)
def test_toml_value(value: object, toml: str) -> None:
    assert fmt.toml_value(value) == toml
    assert tomllib.loads(f"v = {toml}")["v"] == value
