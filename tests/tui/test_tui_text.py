"""Tests for the TUI's text helpers: escaping control characters and number formats."""

from __future__ import annotations

import pytest
from rich.text import Text

from olmo_inspect.tui.text import (
    format_bytes,
    format_count,
    format_indices,
    format_range,
    format_shape,
    safe,
    safe_text,
)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("transformer.wte.weight", "transformer.wte.weight"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\rb", "a\\x0db"),
        ("bell\x07", "bell\\x07"),
        ("line\nbreak\ttab", "line\\x0abreak\\x09tab"),
        ("c1\x9bcontrol", "c1\\x9bcontrol"),
        ("evil\u202etxt.pt", "evil\\u202etxt.pt"),
        ("[red]x[/red]", "[red]x[/red]"),
        ("ünïcode ✓", "ünïcode ✓"),
    ],
)
def test_safe_text_escapes_controls(raw: str, shown: str) -> None:
    assert safe_text(raw) == shown


def test_safe_text_multiline_keeps_newlines() -> None:
    assert safe_text("a: 1\n\tb: \x1b[31m\n", multiline=True) == "a: 1\n\tb: \\x1b[31m\n"


def test_safe_keeps_markup_literal() -> None:
    text = safe("[bold red]x[/]")

    assert isinstance(text, Text)
    assert text.plain == "[bold red]x[/]"
    assert text.spans == []


def test_safe_none_shows_dash() -> None:
    assert safe(None).plain == "-"


def test_format_helpers() -> None:
    assert format_count(1176764416) == "1,176,764,416"
    assert format_count(None) == "-"
    assert format_shape((2048, 2048)) == "(2048, 2048)"
    assert format_shape((16,)) == "(16,)"
    assert format_shape(()) == "()"
    assert format_range((0, 4096)) == "[0, 4,096)"
    assert format_bytes(1024**3) == "1.0 GiB"
    assert format_bytes(None) == "-"


@pytest.mark.parametrize(
    ("indices", "shown"),
    [
        (range(16), "0-15"),
        ([0, 2, 4, 5, 6], "0, 2, 4-6"),
        ([7], "7"),
        ([3, 1, 2], "1-3"),
    ],
)
def test_format_indices_joins_runs(indices: list[int], shown: str) -> None:
    assert format_indices(indices) == shown
