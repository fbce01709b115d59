"""Tests for placing shard pieces along a tensor and finding the parts no piece covers."""

from __future__ import annotations

import math

from tui_records import flat_sharded_checkpoint, sharded_checkpoint

from olmo_inspect.model import ShardPiece, TensorInfo
from olmo_inspect.tui.shard_geometry import Axis, layout_tensor, uncovered_volume


def _rect(rank: int, offsets: tuple[int, ...], shape: tuple[int, ...]) -> ShardPiece:
    return ShardPiece(
        rank=rank,
        file=f"rank{rank}.pt",
        key="w",
        numel=math.prod(shape),
        offsets=offsets,
        shape=shape,
    )


def test_row_pieces_cover_whole_tensor() -> None:
    tensor = sharded_checkpoint(world_size=4).tensor("transformer.wte.weight")

    layout = layout_tensor(tensor)

    assert layout.axis is Axis.ROWS
    assert layout.length == tensor.shape[0]
    assert layout.missing == []
    assert [segment.ranks for segment in layout.segments] == [(0,), (1,), (2,), (3,)]


def test_missing_rank_rows_are_missing() -> None:
    tensor = sharded_checkpoint(world_size=2, missing_rank=1).tensor("transformer.wte.weight")
    half = tensor.shape[0] // 2

    layout = layout_tensor(tensor)

    assert layout.missing == [(half, tensor.shape[0])]
    assert layout.missing_count == tensor.shape[0] - half


def test_flat_pieces_gap_is_missing() -> None:
    checkpoint = flat_sharded_checkpoint()

    gap = layout_tensor(checkpoint.tensor("w.weight"))
    whole = layout_tensor(checkpoint.tensor("b.weight"))

    assert gap.axis is Axis.ELEMENTS
    assert gap.length == 128 * 64
    assert gap.missing == [(6160, 8192)]
    assert whole.missing == []


def test_rows_split_on_dim1_check_trailing_cover() -> None:
    # Rows [0, 4) are split in two column halves; rows [4, 8) only have their left half.
    pieces = [_rect(0, (0, 0), (4, 3)), _rect(1, (0, 3), (4, 3)), _rect(2, (4, 0), (4, 3))]
    tensor = TensorInfo(name="w", shape=(8, 6), dtype="float32", file=None, shards=pieces)

    layout = layout_tensor(tensor)

    assert layout.missing == [(4, 8)]
    assert [segment.complete for segment in layout.segments] == [True, False]


def test_uncovered_volume_counts_overlap_once() -> None:
    boxes = [((0, 0), (3, 4)), ((2, 0), (2, 4))]

    assert uncovered_volume(boxes, (6, 4)) == 2 * 4
    assert uncovered_volume([], (6, 4)) == 24
    assert uncovered_volume([((0, 0), (6, 4))], (6, 4)) == 0


def test_scalar_piece_covers_scalar() -> None:
    piece = ShardPiece(rank=0, file="rank0.pt", key="step", numel=1, offsets=(), shape=())
    tensor = TensorInfo(name="step", shape=(), dtype="int64", file=None, shards=[piece])

    layout = layout_tensor(tensor)

    assert layout.length == 1
    assert layout.missing == []


def test_unplaceable_piece_gets_no_span() -> None:
    flat = ShardPiece(rank=0, file="a", key="w", numel=4, flat_range=(0, 4))
    column = _rect(1, (0, 1), (2, 1))
    tensor = TensorInfo(name="w", shape=(2, 2), dtype="float32", file=None, shards=[flat, column])

    layout = layout_tensor(tensor)

    assert layout.spans == [(0, 4), None]
    assert layout.missing == []
