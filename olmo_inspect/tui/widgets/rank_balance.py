"""Per-rank files and bytes of a sharded checkpoint, with the imbalance between ranks."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from olmo_inspect.model import Checkpoint, FileInfo, dtype_size
from olmo_inspect.tui.fitted_table import FittedTable, shorten_path
from olmo_inspect.tui.text import format_bytes, format_count, safe

# Width of the bar drawn for the rank holding the most bytes.
BAR_WIDTH = 30

MISSING_STYLE = "bold red"


@dataclass
class RankTotals:
    """Totals of one rank: its files, their bytes on disk and its share of model tensor bytes.

    ``missing_files`` counts the files the metadata names for this rank but the folder lacks;
    ``files`` counts only the files on disk.
    """

    rank: int
    files: int = 0
    missing_files: int = 0
    file_bytes: int = 0
    tensor_bytes: int = 0


# A rank this far above the mean (as a fraction) counts as balanced.
BALANCED_EXCESS = 0.01


def rank_totals(checkpoint: Checkpoint) -> list[RankTotals]:
    """Sum file bytes (from the file list) and model shard bytes (from the pieces) per rank."""
    totals: dict[int, RankTotals] = {}

    def entry(rank: int) -> RankTotals:
        return totals.setdefault(rank, RankTotals(rank=rank))

    for info in checkpoint.files:
        if info.rank is None:
            continue
        if info.missing:
            entry(info.rank).missing_files += 1
            continue
        entry(info.rank).files += 1
        entry(info.rank).file_bytes += info.bytes

    for tensor in checkpoint.tensors:
        element_size = dtype_size(tensor.dtype)
        for piece in tensor.shards:
            if piece.rank is not None:
                entry(piece.rank).tensor_bytes += piece.numel * element_size

    # Ranks the checkpoint should have but that left no file or piece show up with zeros.
    for rank in range(checkpoint.world_size or 0):
        entry(rank)

    return [totals[rank] for rank in sorted(totals)]


def imbalance_text(values: dict[int, int], what: str) -> Text:
    """Describe how far the largest rank's ``values`` lie above the mean."""
    if len(values) < 2 or sum(values.values()) == 0:
        return Text("")

    mean = sum(values.values()) / len(values)
    heaviest = max(values, key=lambda rank: values[rank])
    excess = values[heaviest] / mean - 1
    if excess < BALANCED_EXCESS:
        return Text(f"Balanced {what}: every rank is within 1% of the mean.", style="green")
    return Text(
        f"Imbalance in {what}: rank {heaviest} holds {format_bytes(values[heaviest])}, "
        f"{excess:.1%} above the mean of {format_bytes(round(mean))}.",
        style="yellow",
    )


def _bar(value: int, largest: int) -> Text:
    filled = round(BAR_WIDTH * value / largest) if largest else 0
    return Text("█" * filled + "·" * (BAR_WIDTH - filled), style="dodger_blue2")


def _files_cell(entry: RankTotals) -> Text:
    if entry.missing_files:
        return Text(f"{entry.files} + {entry.missing_files} missing", style=MISSING_STYLE)
    return Text(format_count(entry.files), style="" if entry.files else MISSING_STYLE)


def _rank_files_table(files: list[FileInfo], path_width: int | None) -> Table:
    table = Table(box=None, padding=(0, 1), header_style="bold")
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("file", no_wrap=True, overflow="ellipsis")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("tensors", justify="right", no_wrap=True)
    for info in files:
        path = safe(shorten_path(info.path, path_width))
        if info.missing:
            path.stylize(MISSING_STYLE)
            size = Text("missing", style=MISSING_STYLE)
            expected = "-" if not info.tensors else f"{format_count(info.tensors)} expected"
            tensors = Text(expected, style="red")
        else:
            size = Text(format_bytes(info.bytes))
            tensors = Text(format_count(info.tensors))
        table.add_row(safe(info.rank), path, size, tensors)
    return table


def balance_renderable(checkpoint: Checkpoint) -> RenderableType:
    """Build the per-rank files table and the bytes-per-rank table with the imbalance line."""
    ranked_files = sorted(
        (info for info in checkpoint.files if info.rank is not None),
        key=lambda info: (info.rank, info.path),
    )
    if not ranked_files and not any(tensor.shards for tensor in checkpoint.tensors):
        return Text("No per-rank files are listed for this checkpoint.", style="dim")

    paths = [info.path for info in ranked_files]
    files = FittedTable(lambda width: _rank_files_table(ranked_files, width), paths)

    totals = rank_totals(checkpoint)
    largest = max((entry.file_bytes or entry.tensor_bytes for entry in totals), default=0)
    balance = Table(box=None, padding=(0, 1), header_style="bold")
    balance.add_column("rank", justify="right")
    balance.add_column("files", justify="right")
    balance.add_column("file bytes", justify="right")
    balance.add_column("model shard bytes", justify="right")
    balance.add_column("")
    for entry in totals:
        balance.add_row(
            Text(str(entry.rank)),
            _files_cell(entry),
            Text(format_bytes(entry.file_bytes)),
            Text(format_bytes(entry.tensor_bytes)),
            _bar(entry.file_bytes or entry.tensor_bytes, largest),
        )

    # A rank with a missing file would read as the lightest, so only complete ranks are compared.
    file_bytes = {entry.rank: entry.file_bytes for entry in totals if not entry.missing_files}
    tensor_bytes = {entry.rank: entry.tensor_bytes for entry in totals}
    return Group(
        Text("Files by rank", style="bold underline"),
        files,
        Text(""),
        Text("Bytes per rank", style="bold underline"),
        balance,
        imbalance_text(file_bytes, "file bytes"),
        imbalance_text(tensor_bytes, "model shard bytes"),
    )


class RankBalance(Static):
    """Files and bytes per rank of a sharded checkpoint."""

    def __init__(self, checkpoint: Checkpoint, *, id: str | None = None) -> None:
        super().__init__(balance_renderable(checkpoint), id=id)
