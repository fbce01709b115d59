"""The shard layout view: the pieces of one tensor drawn along it, coloured by rank."""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.text import Text
from textual.widgets import Static

from olmo_inspect.model import TensorInfo
from olmo_inspect.tui.shard_geometry import Axis, TensorLayout, layout_tensor, rank_of_position
from olmo_inspect.tui.text import (
    format_count,
    format_range,
    format_shape,
    join_styled,
    safe,
    safe_text,
)
from olmo_inspect.tui.widgets.tensor_details import pieces_table

# Colours for ranks 0, 1, 2, ... in turn; red is kept for missing ranges.
RANK_COLORS = (
    "dodger_blue2",
    "dark_orange",
    "green3",
    "medium_purple2",
    "gold3",
    "deep_pink3",
    "turquoise2",
    "tan",
)
UNKNOWN_RANK_COLOR = "grey50"
MISSING_STYLE = "bold red"

FULL_CELL = "█"
EMPTY_CELL = "·"
MISSING_CELL = "░"

# Width of the label column left of each bar, and the narrowest bar drawn.
LABEL_WIDTH = 14
MIN_BAR_WIDTH = 10

# One bar per piece up to this many pieces; the pieces table below still lists every piece.
MAX_PIECE_BARS = 64

PLACEHOLDER = "Select a tensor in the Tensors tab to see how it is split across ranks."


def rank_color(rank: int | None) -> str:
    """Return the colour of ``rank`` in the bars and legend."""
    if rank is None:
        return UNKNOWN_RANK_COLOR
    return RANK_COLORS[rank % len(RANK_COLORS)]


def _cell_bounds(cell: int, cells: int, length: int) -> tuple[int, int]:
    """Return the axis range ``[start, end)`` drawn by ``cell`` of a bar ``cells`` wide."""
    start = cell * length // cells
    end = max(start + 1, (cell + 1) * length // cells)
    return start, end


class LayoutBars:
    """A Rich renderable: a coverage bar, then one bar per piece, as wide as the widget."""

    def __init__(self, layout: TensorLayout) -> None:
        self.layout = layout

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        cells = max(MIN_BAR_WIDTH, options.max_width - LABEL_WIDTH)
        yield self._coverage_line(cells)
        yield self._axis_line(cells)

        spans = self.layout.spans
        for piece, span in list(zip(self.layout.tensor.shards, spans, strict=True))[
            :MAX_PIECE_BARS
        ]:
            label = "rank -" if piece.rank is None else f"rank {piece.rank}"
            yield self._piece_line(label, piece.rank, span, cells, missing=piece.missing)

        hidden = len(spans) - MAX_PIECE_BARS
        if hidden > 0:
            yield Text(
                f"{'':{LABEL_WIDTH}}… {hidden:,} more pieces in the table below", style="dim"
            )

    def _coverage_line(self, cells: int) -> Text:
        text = Text(f"{'coverage':<{LABEL_WIDTH}}", style="bold")
        length = self.layout.length
        if length == 0:
            text.append("(empty tensor)", style="dim")
            return text

        for cell in range(cells):
            start, end = _cell_bounds(cell, cells, length)
            missing = any(lo < end and start < hi for lo, hi in self.layout.missing)
            if missing:
                text.append(MISSING_CELL, style=MISSING_STYLE)
                continue

            rank = rank_of_position(self.layout, start)
            text.append(FULL_CELL, style=rank_color(rank))
        return text

    def _axis_line(self, cells: int) -> Text:
        left = "0"
        right = format_count(self.layout.length)
        gap = max(1, cells - len(left) - len(right))
        return Text(f"{'':<{LABEL_WIDTH}}{left}{' ' * gap}{right}", style="dim")

    def _piece_line(
        self,
        label: str,
        rank: int | None,
        span: tuple[int, int] | None,
        cells: int,
        *,
        missing: bool,
    ) -> Text:
        """Draw one piece's bar; a piece whose file is missing is drawn in the missing style."""
        color = MISSING_STYLE if missing else rank_color(rank)
        fill = MISSING_CELL if missing else FULL_CELL
        text = Text(f"{label:<{LABEL_WIDTH}}", style=color)
        length = self.layout.length
        if span is None:
            text.append("(cannot be placed on this axis)", style="dim")
            return text
        if span[0] >= span[1] or length == 0:
            text.append("(empty piece)", style="dim")
            return text

        for cell in range(cells):
            start, end = _cell_bounds(cell, cells, length)
            inside = span[0] < end and start < span[1]
            text.append(fill if inside else EMPTY_CELL, style=color if inside else "dim")
        return text


def _missing_text(layout: TensorLayout) -> Text:
    unit = "rows" if layout.axis is Axis.ROWS else "elements"
    if not layout.missing:
        return Text(
            f"Every one of the {format_count(layout.length)} {unit} is stored.", style="green"
        )

    text = Text(
        f"{format_count(layout.missing_count)} of {format_count(layout.length)} {unit} "
        "not available:\n",
        style=MISSING_STYLE,
    )
    for bounds in layout.missing:
        text.append(f"  {unit} {format_range(bounds)}\n", style="red")

    files = layout.missing_files()
    if files:
        noun = "file" if len(files) == 1 else "files"
        text.append(f"  stored only in the missing {noun} ", style="red")
        text.append(safe_text(", ".join(files)), style="red")
    else:
        text.append("  no piece stores them", style="red")
    return text


def _legend(layout: TensorLayout) -> Text:
    text = Text("ranks: ", style="dim")
    ranks = sorted(
        {piece.rank for piece in layout.tensor.shards}, key=lambda r: (r is None, r or 0)
    )
    for rank in ranks:
        text.append(FULL_CELL, style=rank_color(rank))
        text.append(f" {'-' if rank is None else rank}  ")
    text.append(MISSING_CELL, style=MISSING_STYLE)
    text.append(" missing")
    return text


def layout_renderable(tensor: TensorInfo) -> RenderableType:
    """Build the layout of ``tensor``: bars, legend, missing ranges and the pieces table."""
    title = join_styled(
        (safe_text(tensor.name), "bold"),
        (f"{format_shape(tensor.shape)}  {safe_text(tensor.dtype)}", "dim"),
    )

    if not tensor.shards:
        where = Text("This tensor is stored whole in ")
        where.append_text(safe(tensor.file))
        if tensor.offset is not None:
            where.append(f" at byte offset {tensor.offset:,}")
        where.append(".")
        return Group(title, where)

    layout = layout_tensor(tensor)
    count = len(tensor.shards)
    pieces = f"{count:,} piece" if count == 1 else f"{count:,} pieces"
    if layout.axis is Axis.ROWS:
        axis = f"{pieces} along the rows (dim 0)"
    else:
        axis = f"{pieces} along the flattened elements (row-major)"
    return Group(
        title,
        Text(axis, style="dim"),
        Text(""),
        LayoutBars(layout),
        _legend(layout),
        Text(""),
        _missing_text(layout),
        Text(""),
        Text("Pieces", style="bold underline"),
        pieces_table(tensor.shards),
    )


class ShardLayout(Static):
    """Shard layout of the selected tensor: its pieces by rank and the ranges no piece covers."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(Text(PLACEHOLDER, style="dim"), id=id)
        self.tensor: TensorInfo | None = None

    def show(self, tensor: TensorInfo) -> None:
        """Draw the layout of ``tensor``."""
        self.tensor = tensor
        self.update(layout_renderable(tensor))
