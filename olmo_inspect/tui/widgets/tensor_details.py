"""The details pane: where one tensor is stored, and its shard pieces."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from olmo_inspect.model import ShardPiece, TensorInfo, dtype_size
from olmo_inspect.tui.fitted_table import FittedTable, shorten_path
from olmo_inspect.tui.shard_geometry import Axis, TensorLayout, layout_tensor
from olmo_inspect.tui.text import (
    format_bytes,
    format_count,
    format_indices,
    format_range,
    format_shape,
    safe,
    safe_text,
)

PLACEHOLDER = "Select a tensor in the tree to see where it is stored."

MISSING_STYLE = "bold red"
MISSING_MARK = "✘ missing"


def _field_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def piece_extent(piece: ShardPiece) -> Text:
    """Describe where a piece lies: ``offsets (0, 0) shape (64, 128)`` or a flat range."""
    if piece.flat_range is not None:
        return Text(f"elements {format_range(piece.flat_range)}")
    if piece.offsets is not None and piece.shape is not None:
        return Text(f"offsets {format_shape(piece.offsets)} shape {format_shape(piece.shape)}")
    return Text("position not recorded", style="dim")


def piece_byte_range(piece: ShardPiece) -> tuple[int, int] | None:
    """Return the end-exclusive byte range of ``piece`` in its file, or None when unknown.

    The reader's ``byte_range`` wins. Otherwise the range starts ``storage_offset`` elements
    after the storage's ``data_start`` and spans the elements the piece's stride reaches (its
    element count when contiguous), capped at the end of the storage.
    """
    if piece.byte_range is not None:
        return piece.byte_range

    data = piece.data
    if data is None or data.data_start is None:
        return None
    itemsize = dtype_size(data.dtype)
    if itemsize == 0:
        return None

    start = data.data_start + data.storage_offset * itemsize
    if piece.numel == 0:
        return start, start

    shape = piece.shape if piece.shape is not None else (piece.numel,)
    if data.stride is None or len(data.stride) != len(shape):
        elements = piece.numel
    else:
        elements = 1 + sum((size - 1) * step for size, step in zip(shape, data.stride, strict=True))
    storage_end = data.data_start + data.storage_nbytes
    return start, min(start + elements * itemsize, storage_end)


def _pieces_table(pieces: list[ShardPiece], with_elements: bool, path_width: int | None) -> Table:
    table = Table(box=None, padding=(0, 1), header_style="bold", expand=False)
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("file", no_wrap=True, overflow="ellipsis")
    table.add_column("extent", overflow="fold")
    if with_elements:
        table.add_column("elements", justify="right", no_wrap=True)
    table.add_column("bytes in file", overflow="fold")

    for piece in pieces:
        file = safe(shorten_path(piece.file, path_width))
        if piece.missing:
            file.stylize(MISSING_STYLE)
            bytes_in_file = Text(MISSING_MARK, style=MISSING_STYLE)
        else:
            bytes_in_file = Text(format_range(piece_byte_range(piece)))
        cells = [safe(piece.rank), file, piece_extent(piece)]
        if with_elements:
            cells.append(Text(format_count(piece.numel)))
        cells.append(bytes_in_file)
        table.add_row(*cells)
    return table


def pieces_table(pieces: list[ShardPiece], *, with_elements: bool = True) -> FittedTable:
    """Build the table of shard pieces: rank, file, extent, elements and byte range.

    Pieces in files missing from disk show their file in red and "missing" as byte range. File
    names are shortened from the left when the table is wider than the space, never wrapped.
    """
    paths = [piece.file for piece in pieces]
    return FittedTable(lambda path_width: _pieces_table(pieces, with_elements, path_width), paths)


def availability_text(layout: TensorLayout) -> Text:
    """Describe how much of the tensor the stored pieces hold, naming the missing files."""
    unit = "rows" if layout.axis is Axis.ROWS else "elements"
    if not layout.missing:
        return Text(f"all {format_count(layout.length)} {unit} stored", style="green")

    text = Text(
        f"✘ {format_count(layout.missing_count)} of {format_count(layout.length)} {unit} "
        "not available",
        style=MISSING_STYLE,
    )
    files = layout.missing_files()
    if files:
        text.append(f"; missing {'file' if len(files) == 1 else 'files'}: ", style="red")
        text.append(safe_text(", ".join(files)), style="red")
    return text


def details_renderable(tensor: TensorInfo, indices: list[int] | None) -> RenderableType:
    """Build the details of ``tensor``; ``indices`` are the folded block indices it stands for."""
    table = _field_table()
    table.add_row("name", safe(tensor.name))
    table.add_row("stored key", safe(tensor.stored_key))
    table.add_row("shape", Text(format_shape(tensor.shape)))
    table.add_row("dtype", safe(tensor.dtype))
    table.add_row("elements", Text(format_count(tensor.numel)))
    table.add_row("bytes", Text(f"{format_count(tensor.nbytes)} ({format_bytes(tensor.nbytes)})"))
    table.add_row("file", safe(tensor.file))
    table.add_row("byte offset", safe(None if tensor.offset is None else f"{tensor.offset:,}"))

    if tensor.data is not None and not tensor.data.is_contiguous(tuple(tensor.shape)):
        table.add_row("stride", Text(f"{format_shape(tensor.data.stride)} (not contiguous)"))

    if indices:
        table.add_row(
            "stands for",
            Text(f"blocks {format_indices(indices)}; these details are block {indices[0]}'s"),
        )

    if not tensor.shards:
        return table

    table.add_row("shard pieces", Text(format_count(len(tensor.shards))))
    table.add_row("stored", availability_text(layout_tensor(tensor)))
    return Group(
        table,
        Text(""),
        Text("Shard pieces", style="bold underline"),
        pieces_table(tensor.shards, with_elements=False),
    )


class TensorDetails(Static):
    """Name, stored key, shape, dtype, bytes, file, offset and shard pieces of one tensor."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(Text(PLACEHOLDER, style="dim"), id=id)
        self.tensor: TensorInfo | None = None

    def show(self, tensor: TensorInfo, indices: list[int] | None = None) -> None:
        """Show the details of ``tensor``."""
        self.tensor = tensor
        self.update(details_renderable(tensor, indices))
