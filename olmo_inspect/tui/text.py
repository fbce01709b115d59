"""Turn values from a checkpoint into text that is safe to show in the terminal.

Every string that comes from a checkpoint (tensor names, file names, config text, problems) can
hold terminal control sequences or Rich markup. The widgets build Rich ``Text`` objects from the
output of ``safe_text`` and never parse a checkpoint string as markup.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import humanize
from rich.text import Text

# Unicode bidirectional controls: they reorder what follows them on screen, so a name could
# look like a different name. Unicode classes them as format characters (Cf), not controls.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)

# Characters kept as they are when the text is shown over several lines.
MULTILINE_KEEP = frozenset("\n\t")

# Text shown for a value the checkpoint does not record.
MISSING = "-"

# Unstyled gap between the styled parts of one label.
LABEL_GAP = "  "


def _escape_char(char: str) -> str:
    """Return the Python escape of one character: ``\\x1b``, ``\\u202e``, ``\\U0001f600``."""
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _needs_escape(char: str, multiline: bool) -> bool:
    if multiline and char in MULTILINE_KEEP:
        return False
    return unicodedata.category(char) == "Cc" or char in BIDI_CONTROLS


def safe_text(value: str, *, multiline: bool = False) -> str:
    """Replace control characters in ``value`` with visible Python escapes.

    C0 and C1 control characters (ESC, carriage return, backspace, ...) and the Unicode
    bidirectional controls become ``\\x1b``-style escapes, so ``"\\x1b[2J"`` shows as the seven
    characters ``\\x1b[2J`` and clears nothing. With ``multiline`` set, newlines and tabs are kept
    (for config text); otherwise they are escaped too (for names). Markup such as ``[red]`` is
    left as it is: callers put the result in a Rich ``Text``, which never parses markup.

    Args:
        value: Any string read from a checkpoint.
        multiline: Keep newlines and tabs.

    Returns:
        The string with every control character escaped.
    """
    if value.isprintable() and not BIDI_CONTROLS.intersection(value):
        return value

    pieces = [_escape_char(char) if _needs_escape(char, multiline) else char for char in value]
    return "".join(pieces)


def safe(value: object, style: str = "") -> Text:
    """Build a Rich ``Text`` of ``value`` with control characters escaped; None shows as ``-``."""
    if value is None:
        return Text(MISSING, style="dim")
    return Text(safe_text(str(value)), style=style)


def format_bytes(count: int | None) -> str:
    """Format a byte count in binary units (``1.5 GiB``); None shows as ``-``."""
    if count is None:
        return MISSING
    return humanize.naturalsize(count, binary=True)


def format_count(count: int | None) -> str:
    """Format an integer with thousands separators (``1,176,764,416``); None shows as ``-``."""
    if count is None:
        return MISSING
    return f"{count:,}"


def format_shape(shape: Iterable[int] | None) -> str:
    """Format a shape as PyTorch prints a tuple: ``(2048, 2048)``, ``(16,)``, ``()``."""
    if shape is None:
        return MISSING
    return str(tuple(shape))


def format_range(bounds: tuple[int, int] | None) -> str:
    """Format an end-exclusive range as ``[start, end)``; None shows as ``-``."""
    if bounds is None:
        return MISSING
    start, end = bounds
    return f"[{start:,}, {end:,})"


def format_indices(indices: Iterable[int]) -> str:
    """Format sorted integers compactly, joining consecutive runs: ``0-15``, ``0-3, 5, 7-8``."""
    runs: list[tuple[int, int]] = []
    for index in sorted(indices):
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))

    parts = [str(first) if first == last else f"{first}-{last}" for first, last in runs]
    return ", ".join(parts)


def join_styled(*parts: tuple[str, str], gap: str = LABEL_GAP) -> Text:
    """Join ``(text, style)`` parts into one ``Text``, with an unstyled ``gap`` between them.

    No styled run starts with the gap, so each part begins a run with visible text. SVG
    renderers such as librsvg drop the leading spaces of a run, which would otherwise join the
    parts in screenshots ("Model9 tensors").
    """
    text = Text()
    for index, (value, style) in enumerate(parts):
        if index:
            text.append(gap)
        text.append(value, style=style)
    return text
