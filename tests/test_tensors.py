"""Tests for lazy tensor reads: unsharded storages, shard pieces, DCP items, row ranges."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import pytest
import torch

from olmo_inspect.errors import CorruptFile, IncompleteCheckpoint
from olmo_inspect.model import Checkpoint, CheckpointKind, ShardPiece, StoredBytes, TensorInfo
from olmo_inspect.tensors import byte_ranges, read_rows, read_tensor

HEADER_BYTES = 100


def write_blob(path: Path, values: torch.Tensor, prefix: int = HEADER_BYTES) -> int:
    """Write ``prefix`` filler bytes then the raw bytes of ``values``; return the data start."""
    data = values.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    path.write_bytes(b"\xab" * prefix + data)
    return prefix


def checkpoint_of(root: Path, tensors: list[TensorInfo]) -> Checkpoint:
    return Checkpoint(path=root, kind=CheckpointKind.OLMO_UNSHARDED, tensors=tensors)


def stored(file: str, values: torch.Tensor, start: int, **fields: object) -> StoredBytes:
    dtype = str(values.dtype).removeprefix("torch.")
    return StoredBytes(
        file=file,
        key="0",
        dtype=dtype,
        data_start=start,
        storage_nbytes=values.numel() * values.element_size(),
        **fields,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.float16])
def test_read_tensor_contiguous_dtypes(tmp_path: Path, dtype: torch.dtype) -> None:
    values = (torch.arange(24) * 3 - 7).reshape(4, 6).to(dtype)
    start = write_blob(tmp_path / "blob.bin", values)
    info = TensorInfo(
        "w",
        (4, 6),
        str(dtype).removeprefix("torch."),
        "blob.bin",
        data=stored("blob.bin", values, start),
    )

    result = read_tensor(checkpoint_of(tmp_path, [info]), info)

    assert result.dtype == dtype
    assert torch.equal(result, values)


def test_read_tensor_storage_offset_and_stride(tmp_path: Path) -> None:
    storage = torch.randn(50)
    start = write_blob(tmp_path / "blob.bin", storage)
    # A transposed 4x6 view starting 5 elements into the storage.
    view = storage[5:29].reshape(6, 4).t()
    info = TensorInfo(
        "w",
        (4, 6),
        "float32",
        "blob.bin",
        data=stored("blob.bin", storage, start, storage_offset=5, stride=(1, 4)),
    )

    result = read_tensor(checkpoint_of(tmp_path, [info]), info)

    assert torch.equal(result, view)
    assert byte_ranges(checkpoint_of(tmp_path, [info]), info, 0, 4) is None


def test_read_rows_reads_row_range(tmp_path: Path) -> None:
    values = torch.randn(10, 3)
    start = write_blob(tmp_path / "blob.bin", values)
    info = TensorInfo("w", (10, 3), "float32", "blob.bin", data=stored("blob.bin", values, start))
    checkpoint = checkpoint_of(tmp_path, [info])

    assert torch.equal(read_rows(checkpoint, info, 2, 7), values[2:7])
    assert read_rows(checkpoint, info, 4, 4).shape == (0, 3)


def test_read_scalar_tensor(tmp_path: Path) -> None:
    values = torch.tensor([4.5])
    start = write_blob(tmp_path / "blob.bin", values)
    info = TensorInfo("step", (), "float32", "blob.bin", data=stored("blob.bin", values, start))

    result = read_tensor(checkpoint_of(tmp_path, [info]), info)

    assert result.shape == ()
    assert result.item() == 4.5


def test_truncated_file_raises_corrupt(tmp_path: Path) -> None:
    values = torch.randn(8, 8)
    start = write_blob(tmp_path / "blob.bin", values)
    raw = (tmp_path / "blob.bin").read_bytes()
    (tmp_path / "blob.bin").write_bytes(raw[: len(raw) - 16])
    info = TensorInfo("w", (8, 8), "float32", "blob.bin", data=stored("blob.bin", values, start))

    with pytest.raises(CorruptFile, match=r"blob\.bin"):
        read_tensor(checkpoint_of(tmp_path, [info]), info)


def test_missing_file_raises_incomplete(tmp_path: Path) -> None:
    values = torch.randn(2, 2)
    info = TensorInfo("w", (2, 2), "float32", "gone.bin", data=stored("gone.bin", values, 0))

    with pytest.raises(IncompleteCheckpoint, match=r"gone\.bin"):
        read_tensor(checkpoint_of(tmp_path, [info]), info)


def rectangle_pieces(tmp_path: Path, full: torch.Tensor) -> list[ShardPiece]:
    """Split ``full`` (8x6) into four 4x3 rectangles, one file each."""
    pieces = []
    for rank, (row, col) in enumerate([(0, 0), (0, 3), (4, 0), (4, 3)]):
        part = full[row : row + 4, col : col + 3].contiguous()
        name = f"rank{rank}.bin"
        start = write_blob(tmp_path / name, part, prefix=16 * (rank + 1))
        pieces.append(
            ShardPiece(
                rank=rank,
                file=name,
                key=None,
                numel=part.numel(),
                offsets=(row, col),
                shape=(4, 3),
                data=stored(name, part, start),
            )
        )
    return pieces


def test_assemble_rectangle_pieces(tmp_path: Path) -> None:
    full = torch.randn(8, 6)
    info = TensorInfo("w", (8, 6), "float32", None, shards=rectangle_pieces(tmp_path, full))
    checkpoint = checkpoint_of(tmp_path, [info])

    assert torch.equal(read_tensor(checkpoint, info), full)
    assert torch.equal(read_rows(checkpoint, info, 3, 6), full[3:6])
    assert byte_ranges(checkpoint, info, 0, 8) is None


def test_missing_piece_raises_incomplete(tmp_path: Path) -> None:
    full = torch.randn(8, 6)
    pieces = rectangle_pieces(tmp_path, full)[:3]
    info = TensorInfo("w", (8, 6), "float32", None, shards=pieces)

    with pytest.raises(IncompleteCheckpoint, match="cover 36 of 48"):
        read_tensor(checkpoint_of(tmp_path, [info]), info)


def flat_pieces(tmp_path: Path, full: torch.Tensor, cuts: list[int]) -> list[ShardPiece]:
    """Split the flattened ``full`` at ``cuts``; each piece sits at an offset inside a storage."""
    flat = full.reshape(-1)
    bounds = [0, *cuts, flat.numel()]
    pieces = []
    for rank, (first, last) in enumerate(itertools.pairwise(bounds)):
        padding = torch.zeros(3)
        storage = torch.cat([padding, flat[first:last], padding])
        name = f"flat{rank}.bin"
        start = write_blob(tmp_path / name, storage)
        pieces.append(
            ShardPiece(
                rank=rank,
                file=name,
                key=None,
                numel=last - first,
                flat_range=(first, last),
                data=stored(name, storage, start, storage_offset=3, stride=(1,)),
            )
        )
    return pieces


def test_assemble_flat_pieces(tmp_path: Path) -> None:
    full = torch.randn(7, 5)
    info = TensorInfo("w", (7, 5), "float32", None, shards=flat_pieces(tmp_path, full, [13, 22]))
    checkpoint = checkpoint_of(tmp_path, [info])

    assert torch.equal(read_tensor(checkpoint, info), full)
    assert torch.equal(read_rows(checkpoint, info, 2, 5), full[2:5])


def test_byte_ranges_of_flat_pieces(tmp_path: Path) -> None:
    full = torch.randn(7, 5)
    info = TensorInfo("w", (7, 5), "float32", None, shards=flat_pieces(tmp_path, full, [13, 22]))

    ranges = byte_ranges(checkpoint_of(tmp_path, [info]), info, 1, 6)

    assert ranges is not None
    joined = b"".join(
        (item.file.read_bytes())[item.offset : item.offset + item.length] for item in ranges
    )
    assert joined == full[1:6].numpy().tobytes()


def test_read_dcp_item_without_unpickling(tmp_path: Path) -> None:
    part = torch.randn(3, 4).to(torch.bfloat16)
    buffer = io.BytesIO()
    torch.save(part, buffer)
    item = buffer.getvalue()
    prefix = b"\x00" * 77
    (tmp_path / "__0_0.distcp").write_bytes(prefix + item + b"\x11" * 9)
    piece = ShardPiece(
        rank=0,
        file="__0_0.distcp",
        key="model.w",
        numel=12,
        offsets=(0, 0),
        shape=(3, 4),
        byte_range=(len(prefix), len(prefix) + len(item)),
        data=StoredBytes(
            file="__0_0.distcp",
            key="model.w",
            dtype="bfloat16",
            data_start=None,
            storage_nbytes=24,
            storage_offset=0,
            stride=(4, 1),
        ),
    )
    info = TensorInfo("w", (3, 4), "bfloat16", None, shards=[piece])
    checkpoint = checkpoint_of(tmp_path, [info])

    assert torch.equal(read_tensor(checkpoint, info), part)
    ranges = byte_ranges(checkpoint, info, 0, 3)
    assert ranges is not None
    assert ranges[0].length == math.prod(part.shape) * 2


def test_bad_dcp_item_raises_corrupt(tmp_path: Path) -> None:
    (tmp_path / "__0_0.distcp").write_bytes(b"not a zip at all" * 8)
    piece = ShardPiece(
        rank=0,
        file="__0_0.distcp",
        key="model.w",
        numel=4,
        offsets=(0,),
        shape=(4,),
        byte_range=(0, 128),
    )
    info = TensorInfo("w", (4,), "float32", None, shards=[piece])

    with pytest.raises(CorruptFile, match=r"__0_0\.distcp"):
        read_tensor(checkpoint_of(tmp_path, [info]), info)
