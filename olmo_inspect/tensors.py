"""Read tensor values lazily, one tensor (or one dim-0 row range) at a time, from any kind.

The readers in ``formats/`` record where each tensor's bytes lie (``StoredBytes``). This module
turns those records into ``torch.Tensor`` values with ``pread`` of just the bytes needed and
``torch.frombuffer``. It never loads a checkpoint with torch: a DCP item (a small ``torch.save``
zip inside a ``.distcp`` file) is located through its zip directory and its few-hundred-byte
pickle, read by the restricted unpickler. Peak memory is about the size of the tensor returned.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from olmo_inspect.errors import CorruptFile, IncompleteCheckpoint, UnsupportedFormat
from olmo_inspect.io.dcp_metadata import read_item_tensor
from olmo_inspect.model import Checkpoint, ShardPiece, StoredBytes, TensorInfo, dtype_size

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ByteRange:
    """A run of bytes in a checkpoint file: ``length`` bytes starting at absolute ``offset``."""

    file: Path
    offset: int
    length: int


def torch_dtype(name: str) -> torch.dtype:
    """Return the torch dtype spelled ``name`` (``"bfloat16"``); raises UnsupportedFormat."""
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise UnsupportedFormat(f"dtype {name!r} is not a torch dtype; this tool cannot read it")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """Return torch's spelling of ``dtype`` without the ``torch.`` prefix."""
    return str(dtype).removeprefix("torch.")


def read_tensor(
    checkpoint: Checkpoint, tensor: TensorInfo, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Read the whole value of ``tensor`` from ``checkpoint`` and move it to ``device``.

    Raises:
        IncompleteCheckpoint: a file is missing, or the shard pieces do not cover the tensor.
        CorruptFile: a file is shorter than its record, or a DCP item is not a valid zip.
    """
    rows = tensor.shape[0] if tensor.shape else 1
    value = (
        read_rows(checkpoint, tensor, 0, rows) if tensor.shape else _read_whole(checkpoint, tensor)
    )
    return value.to(device)


def read_rows(checkpoint: Checkpoint, tensor: TensorInfo, start: int, end: int) -> torch.Tensor:
    """Read rows ``[start, end)`` along dim 0 of ``tensor`` on the CPU.

    Reads only the bytes of those rows when the stored layout allows it (a contiguous tensor, or
    shard pieces that span whole rows); otherwise reads what the layout needs and slices.
    """
    if not tensor.shape:
        raise ValueError(f"tensor {tensor.name} is a scalar and has no rows")
    if not 0 <= start <= end <= tensor.shape[0]:
        raise ValueError(f"rows [{start}, {end}) are outside {tensor.name} of shape {tensor.shape}")

    row_shape = (end - start, *tensor.shape[1:])
    if tensor.data is not None:
        return _read_stored_rows(checkpoint, tensor, tensor.data, start, end)
    if tensor.shards:
        return _assemble_rows(checkpoint, tensor, start, end, row_shape)
    raise IncompleteCheckpoint(
        f"{checkpoint.path}: tensor {tensor.name} has no stored bytes and no shard pieces; "
        "check that the checkpoint is complete"
    )


def byte_ranges(
    checkpoint: Checkpoint, tensor: TensorInfo, start: int, end: int
) -> list[ByteRange] | None:
    """Return the file ranges that hold rows ``[start, end)`` of ``tensor`` back to back.

    The result concatenated is exactly the row-major bytes of those rows. Returns None when the
    stored layout does not allow a plain byte copy (non-contiguous storage, unknown offsets,
    shard pieces that split rows).
    """
    row_numel = math.prod(tensor.shape[1:]) if tensor.shape else 1
    first, last = start * row_numel, end * row_numel
    element_size = dtype_size(tensor.dtype)

    if tensor.data is not None:
        stored = tensor.data
        if stored.dtype != tensor.dtype or stored.data_start is None:
            return None
        if not stored.is_contiguous(tensor.shape):
            return None
        if (stored.storage_offset + tensor.numel) * element_size > stored.storage_nbytes:
            return None
        base = stored.data_start + stored.storage_offset * element_size
        return [
            ByteRange(
                checkpoint.path / stored.file,
                base + first * element_size,
                (last - first) * element_size,
            )
        ]

    ranges: list[ByteRange] = []
    for piece_first, piece_last, piece in _flat_pieces(tensor):
        if piece_last <= first or piece_first >= last:
            continue
        stored = _piece_bytes(checkpoint, piece)
        if stored is None or stored.data_start is None or stored.dtype != tensor.dtype:
            return None
        piece_shape = (piece_last - piece_first,)
        if piece.shape is not None and not stored.is_contiguous(piece.shape):
            return None
        if not stored.is_contiguous(piece_shape) and piece.shape is None:
            return None
        base = stored.data_start + stored.storage_offset * element_size
        lo, hi = max(first, piece_first), min(last, piece_last)
        ranges.append(
            ByteRange(
                checkpoint.path / stored.file,
                base + (lo - piece_first) * element_size,
                (hi - lo) * element_size,
            )
        )
    covered = sum(item.length for item in ranges)
    if covered != (last - first) * element_size:
        return None
    return ranges


def _flat_pieces(tensor: TensorInfo) -> Iterator[tuple[int, int, ShardPiece]]:
    """Yield ``(first, last, piece)`` element ranges of pieces that are runs of the flat tensor.

    Stops (yielding nothing) at a rectangular piece that does not span whole rows, because such
    a piece is not one run of the row-major tensor. Callers detect the missing coverage.
    """
    row_numel = math.prod(tensor.shape[1:]) if tensor.shape else 1
    runs: list[tuple[int, int, ShardPiece]] = []
    for piece in tensor.shards:
        if piece.numel == 0:
            continue
        if piece.flat_range is not None:
            runs.append((piece.flat_range[0], piece.flat_range[1], piece))
            continue
        if piece.offsets is None or piece.shape is None:
            return
        spans_rows = all(offset == 0 for offset in piece.offsets[1:]) and tuple(
            piece.shape[1:]
        ) == tuple(tensor.shape[1:])
        if not spans_rows:
            return
        first = piece.offsets[0] * row_numel
        runs.append((first, first + piece.numel, piece))
    yield from sorted(runs, key=lambda run: run[0])


def _read_whole(checkpoint: Checkpoint, tensor: TensorInfo) -> torch.Tensor:
    """Read a scalar (0-d) tensor, stored or as a single shard piece."""
    stored = tensor.data
    if stored is None and tensor.shards:
        stored = _piece_bytes(checkpoint, tensor.shards[0])
    if stored is None:
        raise IncompleteCheckpoint(
            f"{checkpoint.path}: scalar tensor {tensor.name} has no stored bytes; "
            "check that the checkpoint is complete"
        )
    flat = _read_elements(checkpoint, stored, stored.storage_offset, 1)
    return flat.reshape(())


def _read_stored_rows(
    checkpoint: Checkpoint, tensor: TensorInfo, stored: StoredBytes, start: int, end: int
) -> torch.Tensor:
    """Read rows of an unsharded tensor from its storage, honouring offset and stride."""
    import torch

    row_shape = (end - start, *tensor.shape[1:])
    if stored.is_contiguous(tensor.shape):
        row_numel = math.prod(tensor.shape[1:])
        flat = _read_elements(
            checkpoint, stored, stored.storage_offset + start * row_numel, math.prod(row_shape)
        )
        return _as_dtype(flat, stored.dtype, tensor.dtype).reshape(row_shape)

    stride = stored.stride or ()
    first = stored.storage_offset + start * stride[0]
    span = 1 + sum(
        (size - 1) * step for size, step in zip(row_shape, stride, strict=False) if size > 0
    )
    if math.prod(row_shape) == 0:
        return torch.empty(row_shape, dtype=torch_dtype(tensor.dtype))
    flat = _read_elements(checkpoint, stored, first, span)
    value = flat.as_strided(row_shape, stride).contiguous()
    return _as_dtype(value, stored.dtype, tensor.dtype)


def _assemble_rows(
    checkpoint: Checkpoint,
    tensor: TensorInfo,
    start: int,
    end: int,
    row_shape: tuple[int, ...],
) -> torch.Tensor:
    """Assemble rows ``[start, end)`` of a sharded tensor from the pieces that overlap them."""
    import torch

    dtype = torch_dtype(tensor.dtype)
    out = torch.empty(row_shape, dtype=dtype)
    flat_out = out.view(-1)
    row_numel = math.prod(tensor.shape[1:])
    first, last = start * row_numel, end * row_numel
    covered = 0

    for piece in tensor.shards:
        if piece.numel == 0:
            continue
        if piece.flat_range is not None:
            lo, hi = max(first, piece.flat_range[0]), min(last, piece.flat_range[1])
            if lo >= hi:
                continue
            values = _read_piece_flat(checkpoint, tensor, piece, lo - piece.flat_range[0], hi - lo)
            flat_out[lo - first : hi - first] = values
            covered += hi - lo
            continue

        if piece.offsets is None or piece.shape is None:
            raise CorruptFile(
                f"{checkpoint.path / piece.file}: shard piece of {tensor.name} has neither "
                "offsets nor a flat range; the checkpoint metadata is malformed"
            )
        row_lo = max(start, piece.offsets[0])
        row_hi = min(end, piece.offsets[0] + piece.shape[0])
        if row_lo >= row_hi:
            continue
        values = _read_piece_rows(
            checkpoint, tensor, piece, row_lo - piece.offsets[0], row_hi - piece.offsets[0]
        )
        target = [slice(row_lo - start, row_hi - start)]
        target += [
            slice(offset, offset + size)
            for offset, size in zip(piece.offsets[1:], piece.shape[1:], strict=False)
        ]
        out[tuple(target)] = values
        covered += values.numel()

    if covered != math.prod(row_shape):
        raise IncompleteCheckpoint(
            f"{checkpoint.path}: shard pieces of {tensor.name} cover {covered} of "
            f"{math.prod(row_shape)} elements in rows [{start}, {end}); "
            "a rank file may be missing"
        )
    return out


def _read_piece_flat(
    checkpoint: Checkpoint, tensor: TensorInfo, piece: ShardPiece, first: int, count: int
) -> torch.Tensor:
    """Read ``count`` elements of a flat-range piece starting ``first`` elements into it."""
    stored = _require_piece_bytes(checkpoint, tensor, piece)
    values = _read_elements(checkpoint, stored, stored.storage_offset + first, count)
    return _as_dtype(values, stored.dtype, tensor.dtype)


def _read_piece_rows(
    checkpoint: Checkpoint, tensor: TensorInfo, piece: ShardPiece, start: int, end: int
) -> torch.Tensor:
    """Read rows ``[start, end)`` of a rectangular piece (rows relative to the piece)."""
    stored = _require_piece_bytes(checkpoint, tensor, piece)
    assert piece.shape is not None
    piece_info = TensorInfo(
        name=tensor.name, shape=piece.shape, dtype=tensor.dtype, file=piece.file, data=stored
    )
    return _read_stored_rows(checkpoint, piece_info, stored, start, end)


def _require_piece_bytes(
    checkpoint: Checkpoint, tensor: TensorInfo, piece: ShardPiece
) -> StoredBytes:
    stored = _piece_bytes(checkpoint, piece)
    if stored is None:
        raise UnsupportedFormat(
            f"{checkpoint.path / piece.file}: the reader did not record where the bytes of "
            f"{tensor.name} lie in this file, so its values cannot be read"
        )
    return stored


def _piece_bytes(checkpoint: Checkpoint, piece: ShardPiece) -> StoredBytes | None:
    """Return the piece's StoredBytes, resolving a DCP item's inner zip when needed."""
    stored = piece.data
    if stored is not None and stored.data_start is not None:
        return stored
    if piece.byte_range is None:
        return stored
    return resolve_dcp_item(checkpoint.path / piece.file, piece, stored)


def resolve_dcp_item(path: Path, piece: ShardPiece, stored: StoredBytes | None) -> StoredBytes:
    """Find where the storage bytes of a DCP tensor item start inside ``path``.

    A ``.distcp`` item is a complete ``torch.save`` zip occupying ``piece.byte_range``; the
    metadata reader locates its storage entry (see :func:`read_item_tensor`).

    Raises:
        IncompleteCheckpoint: the file is missing.
        CorruptFile: the item is not a zip holding one tensor.
    """
    assert piece.byte_range is not None
    item_start, item_end = piece.byte_range
    if not path.exists():
        raise IncompleteCheckpoint(f"{path}: file not found; the checkpoint is incomplete")
    item = read_item_tensor(path, item_start, item_end - item_start)

    base = stored or StoredBytes(
        file=piece.file, key=piece.key or "", dtype=item.dtype, data_start=None, storage_nbytes=0
    )
    return replace(
        base,
        data_start=item.data_start,
        storage_nbytes=item.storage_nbytes,
        storage_offset=item.storage_offset,
        stride=item.stride,
    )


def _read_elements(
    checkpoint: Checkpoint, stored: StoredBytes, first: int, count: int
) -> torch.Tensor:
    """Read ``count`` elements of ``stored`` starting at storage element ``first`` (a 1-d view)."""
    import torch

    element_size = dtype_size(stored.dtype)
    if element_size == 0:
        raise UnsupportedFormat(
            f"{checkpoint.path / stored.file}: dtype {stored.dtype!r} of {stored.key} is unknown"
        )
    if stored.data_start is None:
        raise UnsupportedFormat(
            f"{checkpoint.path / stored.file}: the location of {stored.key} in this file is "
            "unknown (a compressed entry?), so its values cannot be read"
        )
    if (first + count) * element_size > stored.storage_nbytes:
        raise CorruptFile(
            f"{checkpoint.path / stored.file}: {stored.key} needs elements up to {first + count} "
            f"but its storage holds {stored.storage_nbytes // element_size}; the file is damaged"
        )

    path = checkpoint.path / stored.file
    offset = stored.data_start + first * element_size
    buffer = pread_exact(path, offset, count * element_size)
    if count == 0:
        return torch.empty(0, dtype=torch_dtype(stored.dtype))
    return torch.frombuffer(buffer, dtype=torch_dtype(stored.dtype))


def pread_exact(path: Path, offset: int, length: int) -> bytearray:
    """Read exactly ``length`` bytes at ``offset`` of ``path`` into a new writable buffer.

    Raises:
        IncompleteCheckpoint: the file is missing.
        CorruptFile: the file ends before ``offset + length``.
    """
    buffer = bytearray(length)
    view = memoryview(buffer)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as error:
        raise IncompleteCheckpoint(
            f"{path}: file not found; the checkpoint is incomplete"
        ) from error
    try:
        done = 0
        while done < length:
            count = os.preadv(fd, [view[done:]], offset + done)
            if count == 0:
                raise CorruptFile(
                    f"{path}: file ends at byte {offset + done}, but {length} bytes are needed "
                    f"from offset {offset}; the file is truncated"
                )
            done += count
    finally:
        os.close(fd)
    return buffer


def _as_dtype(value: torch.Tensor, stored_dtype: str, dtype: str) -> torch.Tensor:
    """Reinterpret or cast ``value`` when the storage dtype differs from the tensor's."""
    if stored_dtype == dtype:
        return value
    return value.to(torch_dtype(dtype))
