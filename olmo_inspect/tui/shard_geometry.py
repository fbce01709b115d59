"""Placement of one tensor's shard pieces along the tensor, and the parts no piece covers.

The shard layout view draws a tensor as a line: its rows (dim 0) when every piece is a
rectangle, or its row-major flattened elements when pieces are flat ranges. ``layout_tensor``
cuts that line into segments at every piece boundary and records which ranks cover each
segment and whether the segment is covered completely (for rectangles split on later dims too,
the trailing dims are checked). A piece whose file is missing from disk (``ShardPiece.missing``)
covers nothing: its range counts as missing unless another piece stores it too. Pure functions
over ``ShardPiece`` records: no Textual.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from olmo_inspect.model import ShardPiece, TensorInfo

# A rectangle inside a tensor: (offsets, sizes), one entry per dim.
Box = tuple[tuple[int, ...], tuple[int, ...]]


class Axis(str, Enum):
    """Unit of the layout line: tensor rows or flattened elements."""

    ROWS = "rows"
    ELEMENTS = "elements"


@dataclass(frozen=True)
class Segment:
    """A stretch ``[start, end)`` of the axis between two piece boundaries."""

    start: int
    end: int
    ranks: tuple[int | None, ...]
    complete: bool


@dataclass
class TensorLayout:
    """The pieces of one tensor placed along one axis.

    ``spans`` has one entry per piece of ``tensor.shards`` (None for a piece this axis cannot
    place, such as a rectangle split on a later dim when the others are flat ranges). Pieces in
    missing files are placed too, but no segment counts them as covering.
    ``missing`` lists the merged ranges that some part of the tensor is missing from.
    """

    tensor: TensorInfo
    axis: Axis
    length: int
    spans: list[tuple[int, int] | None]
    segments: list[Segment] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)

    @property
    def missing_count(self) -> int:
        return sum(end - start for start, end in self.missing)

    def missing_files(self) -> list[str]:
        """Return the missing files whose pieces overlap a missing range, in piece order."""
        files: list[str] = []
        for piece, span in zip(self.tensor.shards, self.spans, strict=True):
            if not piece.missing or piece.file in files:
                continue
            if span is None or any(lo < span[1] and span[0] < hi for lo, hi in self.missing):
                files.append(piece.file)
        return files


def has_missing_pieces(tensor: TensorInfo) -> bool:
    """Return True when a non-empty piece of ``tensor`` lies in a file missing from disk."""
    return any(piece.missing and piece.numel > 0 for piece in tensor.shards)


def lacks_data(tensor: TensorInfo) -> bool:
    """Return True when part of ``tensor`` is stored only in files missing from disk.

    Only tensors with a missing non-empty piece are laid out, so calling this for every tensor
    of a complete checkpoint stays cheap.
    """
    if not has_missing_pieces(tensor):
        return False
    return bool(layout_tensor(tensor).missing)


def uncovered_volume(boxes: Sequence[Box], shape: tuple[int, ...]) -> int:
    """Return how many elements of a tensor of ``shape`` lie in none of ``boxes``.

    Works dim by dim: cut dim 0 at every box boundary, then count each stretch against the
    boxes that span it, over the remaining dims. Overlapping boxes are counted once.
    """
    if not shape:
        return 0 if boxes else 1

    size = shape[0]
    trailing = shape[1:]
    cuts = {0, size}
    for offsets, sizes in boxes:
        cuts.add(min(max(offsets[0], 0), size))
        cuts.add(min(max(offsets[0] + sizes[0], 0), size))
    bounds = sorted(cuts)

    missing = 0
    for start, end in itertools.pairwise(bounds):
        covering = [
            (offsets[1:], sizes[1:])
            for offsets, sizes in boxes
            if offsets[0] <= start and end <= offsets[0] + sizes[0]
        ]
        missing += (end - start) * uncovered_volume(covering, trailing)
    return missing


def _box(piece: ShardPiece, ndim: int) -> Box | None:
    if piece.offsets is None or piece.shape is None:
        return None
    if len(piece.offsets) != ndim or len(piece.shape) != ndim:
        return None
    return tuple(piece.offsets), tuple(piece.shape)


def _spans_all_trailing(box: Box, shape: tuple[int, ...]) -> bool:
    offsets, sizes = box
    return all(offset == 0 for offset in offsets[1:]) and tuple(sizes[1:]) == tuple(shape[1:])


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def layout_tensor(tensor: TensorInfo) -> TensorLayout:
    """Place the shard pieces of ``tensor`` along its rows or flattened elements.

    Rows when no piece is a flat range, elements otherwise; a scalar tensor is one row.
    A tensor with no pieces gets an empty layout with the whole axis missing.
    """
    shape = tuple(tensor.shape)
    pieces = tensor.shards
    boxes = [_box(piece, len(shape)) for piece in pieces]
    flat = any(piece.flat_range is not None for piece in pieces)

    if flat:
        return _layout_elements(tensor, boxes)
    return _layout_rows(tensor, boxes)


def _layout_elements(tensor: TensorInfo, boxes: list[Box | None]) -> TensorLayout:
    shape = tuple(tensor.shape)
    length = math.prod(shape)
    row_size = math.prod(shape[1:])

    spans: list[tuple[int, int] | None] = []
    for piece, box in zip(tensor.shards, boxes, strict=True):
        if piece.flat_range is not None:
            spans.append((piece.flat_range[0], piece.flat_range[1]))
        elif box is not None and shape and _spans_all_trailing(box, shape):
            offsets, sizes = box
            spans.append((offsets[0] * row_size, (offsets[0] + sizes[0]) * row_size))
        else:
            spans.append(None)

    layout = TensorLayout(tensor=tensor, axis=Axis.ELEMENTS, length=length, spans=spans)
    _fill_segments(layout, complete_of=None)
    return layout


def _layout_rows(tensor: TensorInfo, boxes: list[Box | None]) -> TensorLayout:
    shape = tuple(tensor.shape)
    length = shape[0] if shape else 1

    spans: list[tuple[int, int] | None] = []
    for box in boxes:
        if box is None:
            spans.append(None)
        elif not shape:
            spans.append((0, 1))
        else:
            offsets, sizes = box
            spans.append((offsets[0], offsets[0] + sizes[0]))

    stored = [box for piece, box in zip(tensor.shards, boxes, strict=True) if not piece.missing]

    def complete_of(start: int, end: int) -> bool:
        if not shape:
            return True
        trailing = [
            (box[0][1:], box[1][1:])
            for box in stored
            if box is not None and box[0][0] <= start and end <= box[0][0] + box[1][0]
        ]
        return uncovered_volume(trailing, shape[1:]) == 0

    layout = TensorLayout(tensor=tensor, axis=Axis.ROWS, length=length, spans=spans)
    _fill_segments(layout, complete_of=complete_of)
    return layout


def _fill_segments(layout: TensorLayout, complete_of: Callable[[int, int], bool] | None) -> None:
    """Cut the axis at every span boundary and record the ranks and coverage of each stretch."""
    cuts = {0, layout.length}
    for span in layout.spans:
        if span is None:
            continue
        cuts.add(min(max(span[0], 0), layout.length))
        cuts.add(min(max(span[1], 0), layout.length))
    bounds = sorted(cuts)

    missing: list[tuple[int, int]] = []
    for start, end in itertools.pairwise(bounds):
        ranks = tuple(
            piece.rank
            for piece, span in zip(layout.tensor.shards, layout.spans, strict=True)
            if span is not None and not piece.missing and span[0] <= start and end <= span[1]
        )
        complete = bool(ranks)
        if complete and complete_of is not None:
            complete = complete_of(start, end)

        layout.segments.append(Segment(start=start, end=end, ranks=ranks, complete=complete))
        if not complete:
            missing.append((start, end))

    layout.missing = _merge(missing)


def rank_of_position(layout: TensorLayout, position: int) -> int | None:
    """Return the first rank covering ``position`` on the axis, or None when none does."""
    for segment in layout.segments:
        if segment.start <= position < segment.end and segment.ranks:
            return segment.ranks[0]
    return None
