"""The config tab: the model summary, config/tensor mismatches and the config file text."""

from __future__ import annotations

import json
from pathlib import PurePath

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from olmo_inspect.model import Checkpoint, Summary
from olmo_inspect.tui.text import format_bytes, format_count, safe, safe_text

# Syntax lexers by config file suffix; any other file is shown as plain text.
LEXERS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
SYNTAX_THEME = "monokai"

# Summary fields shown as counts, in display order, with their labels.
COUNT_FIELDS = [
    ("parameters", "parameters"),
    ("layers", "layers"),
    ("d_model", "d_model"),
    ("n_heads", "attention heads"),
    ("n_kv_heads", "key/value heads"),
    ("head_dim", "head dim"),
    ("mlp_hidden_size", "MLP hidden size"),
    ("vocab_size", "vocab size"),
    ("embedding_size", "embedding size"),
    ("context_length", "context length"),
]
TEXT_FIELDS = [
    ("generation", "architecture"),
    ("weight_tying", "weight tying"),
    ("activation", "activation"),
    ("norm", "norm"),
]


def summary_renderable(summary: Summary | None) -> RenderableType:
    """Build the model summary table and the list of config/tensor mismatches."""
    if summary is None:
        return Text("No model summary is available for this checkpoint.", style="dim")

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for attribute, label in COUNT_FIELDS:
        table.add_row(label, Text(format_count(getattr(summary, attribute))))
    for attribute, label in TEXT_FIELDS:
        table.add_row(label, safe(getattr(summary, attribute)))

    table.add_row("tensor bytes", Text(format_bytes(summary.bytes)))
    for dtype, nbytes in summary.bytes_per_dtype.items():
        table.add_row(Text(f"  {safe_text(dtype)}"), Text(format_bytes(nbytes)))

    if not summary.mismatches:
        verdict = Text("The config agrees with the tensor shapes.", style="green")
        return Group(table, Text(""), verdict)

    mismatches = Text("Config and tensors disagree:\n", style="bold red")
    for mismatch in summary.mismatches:
        mismatches.append(f"  • {safe_text(mismatch)}\n", style="red")
    return Group(table, Text(""), mismatches)


def config_renderable(checkpoint: Checkpoint) -> RenderableType:
    """Build the highlighted config text; falls back to the parsed config as JSON."""
    if checkpoint.config_text is not None:
        source = checkpoint.config_text
        suffix = PurePath(checkpoint.config_file or "").suffix.lower()
        lexer = LEXERS.get(suffix, "text")
    elif checkpoint.config:
        source = json.dumps(checkpoint.config, indent=2, default=str)
        lexer = "json"
    else:
        return Text("This checkpoint has no config file.", style="dim")

    title = Text(safe_text(checkpoint.config_file or "parsed config"), style="bold underline")
    syntax = Syntax(
        safe_text(source, multiline=True),
        lexer,
        theme=SYNTAX_THEME,
        line_numbers=True,
        background_color="default",
        word_wrap=False,
    )
    return Group(title, syntax)


class ConfigView(VerticalScroll):
    """Summary, mismatches and config text of one checkpoint, in one scrolling column."""

    def __init__(
        self, checkpoint: Checkpoint, summary: Summary | None, *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self._checkpoint = checkpoint
        self._summary = summary

    def compose(self) -> ComposeResult:
        """Yield the summary and the config text."""
        yield Static(Text("Model summary", style="bold underline"), classes="section-title")
        yield Static(summary_renderable(self._summary), id="summary")
        yield Static(config_renderable(self._checkpoint), id="config-text")
