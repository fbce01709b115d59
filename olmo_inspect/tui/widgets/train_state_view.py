"""The trainer state tab: step, tokens seen, the other trainer fields and the optimizer layout."""

from __future__ import annotations

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
            table.add_row(safe(name), format_value(value))
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
        fields = ", ".join(f"{key}={value}" for key, value in group.items())
        table.add_row(f"param group {index}", format_value(fields))
    parts.append(table)
    return Group(*parts)


class TrainStateView(Static):
    """Trainer state fields and optimizer layout of one checkpoint."""

    def __init__(self, checkpoint: Checkpoint, *, id: str | None = None) -> None:
        super().__init__(train_state_renderable(checkpoint), id=id)
