"""The trainer state tab: step, tokens seen, the other trainer fields and the optimizer layout.

Nested values (the data loader state, callbacks, optimizer param groups) are drawn as an
indented key/value tree, lists of short scalars on one line, and None as ``-``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from olmo_inspect.model import Checkpoint
from olmo_inspect.tui.text import format_bytes, format_count, safe, safe_text

# Maximum characters of one value shown in full, because RNG states and checkpoint lists can
# be many kilobytes long.
MAX_VALUE_CHARS = 300

# A list of scalars this short (joined with ", ") shows on one line; longer ones get a row each.
MAX_INLINE_CHARS = 80

# Rows shown per dict or list before the rest is summarised as "… N more", and nesting shown.
MAX_CHILDREN = 20
MAX_DEPTH = 6

INDENT = "  "
EMPTY = "(empty)"


def format_value(value: Any) -> Text:
    """Format one trainer field: ints with separators, other values as text, cut when long."""
    if isinstance(value, bool) or value is None:
        return safe(value)
    if isinstance(value, int):
        return Text(format_count(value))

    shown = safe_text(str(value))
    if len(shown) <= MAX_VALUE_CHARS:
        return Text(shown)

    text = Text(shown[:MAX_VALUE_CHARS])
    text.append(f" … ({len(shown):,} characters)", style="dim")
    return text


def _field_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple)


def _inline_list(items: list[Any] | tuple[Any, ...]) -> Text | None:
    """Join a list of scalars on one line, or return None for containers or long lists."""
    if not all(_is_scalar(item) for item in items):
        return None
    joined = Text(", ").join(format_value(item) for item in items)
    if len(joined.plain) > MAX_INLINE_CHARS:
        return None
    return joined


def add_value_rows(table: Table, key: str, value: Any, depth: int = 0) -> None:
    """Add ``key`` and ``value`` to ``table``, with a row per item of a dict or list.

    Children are indented under their key; past ``MAX_DEPTH`` levels or ``MAX_CHILDREN``
    items the rest is counted, not shown.
    """
    label = Text(INDENT * depth + safe_text(key))
    if _is_scalar(value):
        table.add_row(label, format_value(value))
        return
    if not value:
        table.add_row(label, Text(EMPTY, style="dim"))
        return

    if isinstance(value, list | tuple):
        inline = _inline_list(value)
        if inline is not None:
            table.add_row(label, inline)
            return
        items: list[tuple[str, Any]] = [(f"[{index}]", item) for index, item in enumerate(value)]
    else:
        items = [(str(name), item) for name, item in value.items()]

    noun = "item" if len(items) == 1 else "items"
    if depth >= MAX_DEPTH:
        table.add_row(label, Text(f"{len(items):,} {noun} nested too deep to show", style="dim"))
        return

    table.add_row(label, Text(f"{len(items):,} {noun}", style="dim"))
    for name, item in items[:MAX_CHILDREN]:
        add_value_rows(table, name, item, depth + 1)
    hidden = len(items) - MAX_CHILDREN
    if hidden > 0:
        table.add_row(Text(INDENT * (depth + 1) + "…"), Text(f"{hidden:,} more", style="dim"))


def train_state_renderable(checkpoint: Checkpoint) -> RenderableType:
    """Build the trainer state and optimizer sections for ``checkpoint``."""
    parts: list[RenderableType] = [Text("Trainer state", style="bold underline")]

    state = checkpoint.train_state
    if state is None:
        parts.append(Text("No trainer state found in this checkpoint.", style="dim"))
    else:
        table = _field_table()
        table.add_row("file", safe(state.file))
        table.add_row("step", format_value(state.step))
        table.add_row("tokens seen", format_value(state.tokens_seen))
        for name, value in state.fields.items():
            add_value_rows(table, str(name), value)
        parts.append(table)

    parts.extend([Text(""), Text("Optimizer", style="bold underline")])
    optimizer = checkpoint.optimizer
    if optimizer is None:
        parts.append(Text("No optimizer state found in this checkpoint.", style="dim"))
        return Group(*parts)

    table = _field_table()
    table.add_row("kind", safe(optimizer.kind))
    table.add_row("tensors", Text(f"{len(optimizer.tensors):,} ({format_bytes(optimizer.nbytes)})"))
    table.add_row("state keys", safe(", ".join(optimizer.state_keys) or None))
    table.add_row("files", safe(", ".join(optimizer.files) or None))
    for index, group in enumerate(optimizer.param_groups):
        add_value_rows(table, f"param group {index}", group)
    parts.append(table)
    return Group(*parts)


class TrainStateView(Static):
    """Trainer state fields and optimizer layout of one checkpoint."""

    def __init__(self, checkpoint: Checkpoint, *, id: str | None = None) -> None:
        super().__init__(train_state_renderable(checkpoint), id=id)
