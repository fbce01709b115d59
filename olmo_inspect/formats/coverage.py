"""Check that a sharded tensor's pieces cover it exactly once.

Rectangular pieces are boxes given by ``offsets`` and ``shape``; flat pieces are element
ranges of the row-major flattened tensor. Pieces with ``numel`` 0 are ignored. The checks are
sweeps over sorted pieces, so 1024 ranks cost about as much as sorting 1024 items.
"""

from __future__ import annotations

import math

from olmo_inspect.model import ShardPiece, TensorInfo

# How many problems one tensor reports before the rest are summarised.
MAX_PROBLEMS_PER_TENSOR = 4


def coverage_problems(tensor: TensorInfo) -> list[str]:
    """Return one sentence per gap, overlap or out-of-bounds piece of ``tensor``."""
    pieces = [piece for piece in tensor.shards if piece.numel > 0]
    if tensor.numel == 0:
        return []
    if not pieces:
        return [f"{tensor.name}: no stored piece"]

    flat = [piece for piece in pieces if piece.flat_range is not None]
    boxes = [piece for piece in pieces if piece.flat_range is None and piece.offsets is not None]
    problems: list[str] = []
    if flat:
        problems += _flat_problems(tensor, flat)
    if boxes:
        problems += _box_problems(tensor, boxes)

    covered = sum(piece.numel for piece in pieces)
    if not problems and covered != tensor.numel:
        problems.append(
            f"{tensor.name}: pieces hold {covered} elements, the tensor has {tensor.numel}"
        )
    if len(problems) > MAX_PROBLEMS_PER_TENSOR:
        hidden = len(problems) - MAX_PROBLEMS_PER_TENSOR
        problems = [*problems[:MAX_PROBLEMS_PER_TENSOR], f"{tensor.name}: {hidden} more problems"]
    return problems


def _flat_problems(tensor: TensorInfo, pieces: list[ShardPiece]) -> list[str]:
    problems: list[str] = []
    ranges = sorted(piece.flat_range for piece in pieces if piece.flat_range is not None)
    position = 0
    for start, end in ranges:
        if end > tensor.numel:
            problems.append(
                f"{tensor.name}: piece [{start}, {end}) runs past the tensor's "
                f"{tensor.numel} elements"
            )
        if start > position:
            problems.append(f"{tensor.name}: elements [{position}, {start}) are in no piece")
        elif start < position:
            problems.append(
                f"{tensor.name}: elements [{start}, {min(position, end)}) are stored twice"
            )
        position = max(position, end)
    if position < tensor.numel:
        problems.append(f"{tensor.name}: elements [{position}, {tensor.numel}) are in no piece")
    return problems


def _box_problems(tensor: TensorInfo, pieces: list[ShardPiece]) -> list[str]:
    problems: list[str] = []
    boxes: list[tuple[tuple[int, ...], tuple[int, ...], ShardPiece]] = []
    for piece in pieces:
        offsets = piece.offsets or ()
        shape = piece.shape or ()
        if len(offsets) != len(tensor.shape) or len(shape) != len(tensor.shape):
            problems.append(
                f"{tensor.name}: piece in {piece.file} has {len(offsets)} dims, "
                f"the tensor has {len(tensor.shape)}"
            )
            continue
        ends = tuple(offset + size for offset, size in zip(offsets, shape, strict=True))
        if any(end > size for end, size in zip(ends, tensor.shape, strict=True)):
            problems.append(
                f"{tensor.name}: piece at {list(offsets)} of shape {list(shape)} in "
                f"{piece.file} lies outside {list(tensor.shape)}"
            )
            continue
        boxes.append((tuple(offsets), ends, piece))

    # Sweep along dim 0: only boxes whose dim-0 ranges meet can overlap.
    boxes.sort(key=lambda box: box[0])
    active: list[tuple[tuple[int, ...], tuple[int, ...], ShardPiece]] = []
    for start, end, piece in boxes:
        active = [box for box in active if box[1][0] > start[0]]
        for other_start, other_end, other in active:
            bounds = zip(start, end, other_start, other_end, strict=True)
            if all(s < oe and os_ < e for s, e, os_, oe in bounds):
                problems.append(f"{tensor.name}: pieces in {other.file} and {piece.file} overlap")
        active.append((start, end, piece))

    covered = sum(
        math.prod(e - s for s, e in zip(start, end, strict=True)) for start, end, _ in boxes
    )
    if not problems and covered < tensor.numel:
        problems.append(
            f"{tensor.name}: {tensor.numel - covered} of {tensor.numel} elements are in no piece"
        )
    return problems
