"""Write ``torch.save``-compatible ``.pt`` files entry by entry.

A ``torch.save`` file is an uncompressed zip: ``<archive>/data.pkl`` pickles the object with
tensors as ``torch._utils._rebuild_tensor_v2`` calls whose storages are persistent ids
``("storage", <dtype>Storage, key, "cpu", numel)``, and each storage's bytes sit in
``<archive>/data/<key>``, aligned to 64 bytes. This writer pickles the object tree first
(tensors as ``TensorSlot`` placeholders with known dtype and shape), then streams each storage,
so only one tensor is in memory at a time. Files load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_inspect.convert.bytecopy import copy_range_with_crc
from olmo_inspect.convert.safetensors_writer import dtype_name_of, tensor_bytes
from olmo_inspect.errors import ConversionError, UnsupportedFormat
from olmo_inspect.model import dtype_size

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# torch.save pickles with protocol 2 and aligns each record's data to 64 bytes.
TORCH_PICKLE_PROTOCOL = 2
TORCH_RECORD_ALIGNMENT = 64
TORCH_FORMAT_VERSION = b"3\n"

ZIP_LOCAL_SIGNATURE = 0x04034B50
ZIP_CENTRAL_SIGNATURE = 0x02014B50
ZIP_END_SIGNATURE = 0x06054B50
ZIP64_END_SIGNATURE = 0x06064B50
ZIP64_LOCATOR_SIGNATURE = 0x07064B50
ZIP64_EXTRA_ID = 0x0001
# Extra-field id of the alignment padding; torch's writer uses the bytes "FB".
PADDING_EXTRA_ID = 0x4246
ZIP32_LIMIT = 0xFFFFFFFF
ZIP16_LIMIT = 0xFFFF
ZIP_VERSION = 20
ZIP64_VERSION = 45
# DOS date 1980-01-01, the earliest a zip can hold; a fixed stamp keeps output reproducible.
ZIP_DOS_DATE = (1 << 5) | 1
CRC_OFFSET_IN_LOCAL_HEADER = 14
# The storage class name torch.save pickles for each dtype.
STORAGE_CLASSES: dict[str, str] = {
    "float64": "DoubleStorage",
    "float32": "FloatStorage",
    "float16": "HalfStorage",
    "bfloat16": "BFloat16Storage",
    "complex64": "ComplexFloatStorage",
    "complex128": "ComplexDoubleStorage",
    "int64": "LongStorage",
    "int32": "IntStorage",
    "int16": "ShortStorage",
    "int8": "CharStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
}


@dataclass(frozen=True)
class TensorSlot:
    """A tensor placeholder in the object tree: filled later by ``write_tensor(key, ...)``."""

    key: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * dtype_size(self.dtype)


class _StorageRef:
    def __init__(self, slot: TensorSlot, storage_class: type) -> None:
        self.slot = slot
        self.storage_class = storage_class


class _RebuildTensor:
    """Pickles as torch.save pickles a dense CPU tensor with its own storage."""

    def __init__(self, slot: TensorSlot) -> None:
        self.slot = slot

    def __reduce_ex__(self, protocol: int) -> tuple[Any, ...]:
        import torch

        shape = self.slot.shape
        stride = _contiguous_stride(shape)
        storage = _StorageRef(self.slot, storage_class_for(self.slot.dtype))
        arguments = (storage, 0, tuple(shape), stride, False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, arguments)


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _StorageRef):
            return ("storage", obj.storage_class, obj.slot.key, "cpu", obj.slot.numel)
        return None


def storage_class_for(dtype: str) -> type:
    """Return the legacy storage class torch.save names for ``dtype`` (``torch.FloatStorage``).

    Raises:
        UnsupportedFormat: ``dtype`` has no legacy storage class (float8 types, unsigned > 8 bit).
    """
    name = STORAGE_CLASSES.get(dtype)
    if name is None:
        raise UnsupportedFormat(f"dtype {dtype} cannot be written to a .pt file by this tool")

    import torch

    return getattr(torch, name)


def _contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride: list[int] = []
    step = 1
    for size in reversed(shape):
        stride.append(step)
        step *= max(size, 1)
    return tuple(reversed(stride))


def _replace_slots(tree: Any) -> Any:
    if isinstance(tree, TensorSlot):
        return _RebuildTensor(tree)
    if isinstance(tree, collections.OrderedDict):
        return collections.OrderedDict((key, _replace_slots(value)) for key, value in tree.items())
    if isinstance(tree, dict):
        return {key: _replace_slots(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_replace_slots(value) for value in tree]
    if isinstance(tree, tuple):
        return tuple(_replace_slots(value) for value in tree)
    return tree


def collect_slots(tree: Any) -> list[TensorSlot]:
    """Return the tensor slots of ``tree`` in the order ``PtWriter`` expects their values."""
    if isinstance(tree, TensorSlot):
        return [tree]
    if isinstance(tree, dict):
        values = tree.values()
    elif isinstance(tree, (list, tuple)):
        values = tree
    else:
        return []
    slots: list[TensorSlot] = []
    for value in values:
        slots.extend(collect_slots(value))
    return slots


@dataclass
class _Entry:
    name: bytes
    header_offset: int
    size: int
    crc: int


class PtWriter:
    """Stream an object tree with ``TensorSlot`` leaves into a ``torch.save`` zip.

    Each slot's value is given once, in slot order, by ``write_tensor`` or ``copy_bytes``;
    ``close`` writes the trailing records and the zip directory.
    """

    def __init__(self, path: Path, tree: Any, archive: str | None = None) -> None:
        self.path = path
        self.slots = collect_slots(tree)
        keys = [slot.key for slot in self.slots]
        if len(set(keys)) != len(keys):
            raise ConversionError(f"{path}: two tensor slots share a storage key")
        self._archive = archive or path.stem
        self._entries: list[_Entry] = []
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._position = 0
        self._next = 0

        pickled = _pickle_tree(tree)
        self._add_record("data.pkl", pickled)
        self._add_record(".format_version", b"1")
        self._add_record(".storage_alignment", str(TORCH_RECORD_ALIGNMENT).encode())
        self._add_record("byteorder", b"little")

    def write_tensor(self, key: str, value: torch.Tensor) -> None:
        """Write the next slot's storage from ``value`` (dtype and shape must match)."""
        slot = self._take(key)
        if dtype_name_of(value) != slot.dtype or tuple(value.shape) != slot.shape:
            raise ConversionError(
                f"{self.path}: tensor {key} is {dtype_name_of(value)} {tuple(value.shape)}, "
                f"but the pickle says {slot.dtype} {slot.shape}"
            )
        self._add_record(f"data/{slot.key}", tensor_bytes(value))

    def copy_bytes(self, key: str, ranges: list[tuple[int, int, int]]) -> None:
        """Write the next slot's storage by copying ``(fd, offset, length)`` source ranges."""
        slot = self._take(key)
        total = sum(length for _, _, length in ranges)
        if total != slot.nbytes:
            raise ConversionError(
                f"{self.path}: byte ranges for {key} hold {total} bytes, expected {slot.nbytes}"
            )
        entry = self._begin_entry(f"data/{slot.key}", total)
        crc = 0
        for source_fd, offset, length in ranges:
            crc = copy_range_with_crc(source_fd, offset, length, self._fd, self._position, crc)
            self._position += length
        self._finish_entry(entry, crc)

    def close(self) -> None:
        """Write the version records and the zip directory, then close the file."""
        if self._next != len(self.slots):
            self.abort()
            raise ConversionError(
                f"{self.path}: {len(self.slots) - self._next} tensors were never written"
            )
        self._add_record("version", TORCH_FORMAT_VERSION)
        self._write_directory()
        os.fsync(self._fd)
        os.close(self._fd)

    def abort(self) -> None:
        """Close the file without finishing it (the caller removes the output folder)."""
        try:
            os.close(self._fd)
        except OSError:
            log.debug("closing %s after an error failed", self.path)

    def _take(self, key: str) -> TensorSlot:
        if self._next >= len(self.slots) or self.slots[self._next].key != key:
            expected = self.slots[self._next].key if self._next < len(self.slots) else "nothing"
            raise ConversionError(f"{self.path}: got tensor {key} but the next slot is {expected}")
        slot = self.slots[self._next]
        self._next += 1
        return slot

    def _add_record(self, name: str, data: bytes | memoryview) -> None:
        entry = self._begin_entry(name, len(data))
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], self._position + written)
        self._position += len(data)
        self._finish_entry(entry, zlib.crc32(data))

    def _begin_entry(self, name: str, size: int) -> _Entry:
        encoded = f"{self._archive}/{name}".encode()
        header_offset = self._position
        zip64 = size >= ZIP32_LIMIT
        extra = struct.pack("<HHQQ", ZIP64_EXTRA_ID, 16, size, size) if zip64 else b""
        data_start = header_offset + 30 + len(encoded) + len(extra)
        padding = (-data_start) % TORCH_RECORD_ALIGNMENT
        if 0 < padding < 4:
            padding += TORCH_RECORD_ALIGNMENT
        if padding:
            extra += struct.pack("<HH", PADDING_EXTRA_ID, padding - 4) + b"Z" * (padding - 4)
        stored_size = ZIP32_LIMIT if zip64 else size
        header = struct.pack(
            "<IHHHHHIIIHH",
            ZIP_LOCAL_SIGNATURE,
            ZIP64_VERSION if zip64 else ZIP_VERSION,
            0,
            0,
            0,
            ZIP_DOS_DATE,
            0,
            stored_size,
            stored_size,
            len(encoded),
            len(extra),
        )
        record = header + encoded + extra
        os.pwrite(self._fd, record, header_offset)
        self._position += len(record)
        entry = _Entry(encoded, header_offset, size, 0)
        self._entries.append(entry)
        return entry

    def _finish_entry(self, entry: _Entry, crc: int) -> None:
        entry.crc = crc
        os.pwrite(
            self._fd, struct.pack("<I", crc), entry.header_offset + CRC_OFFSET_IN_LOCAL_HEADER
        )

    def _write_directory(self) -> None:
        directory_start = self._position
        records = bytearray()
        for entry in self._entries:
            needs64 = entry.size >= ZIP32_LIMIT or entry.header_offset >= ZIP32_LIMIT
            extra = b""
            if needs64:
                extra = struct.pack(
                    "<HHQQQ", ZIP64_EXTRA_ID, 24, entry.size, entry.size, entry.header_offset
                )
            size32 = ZIP32_LIMIT if needs64 else entry.size
            offset32 = ZIP32_LIMIT if needs64 else entry.header_offset
            version = ZIP64_VERSION if needs64 else ZIP_VERSION
            records += struct.pack(
                "<IHHHHHHIIIHHHHHII",
                ZIP_CENTRAL_SIGNATURE,
                version,
                version,
                0,
                0,
                0,
                ZIP_DOS_DATE,
                entry.crc,
                size32,
                size32,
                len(entry.name),
                len(extra),
                0,
                0,
                0,
                0,
                offset32,
            )
            records += entry.name + extra
        directory_size = len(records)
        count = len(self._entries)
        end = bytearray()
        if count >= ZIP16_LIMIT or directory_start >= ZIP32_LIMIT or directory_size >= ZIP32_LIMIT:
            zip64_end_offset = directory_start + directory_size
            end += struct.pack(
                "<IQHHIIQQQQ",
                ZIP64_END_SIGNATURE,
                44,
                ZIP64_VERSION,
                ZIP64_VERSION,
                0,
                0,
                count,
                count,
                directory_size,
                directory_start,
            )
            end += struct.pack("<IIQI", ZIP64_LOCATOR_SIGNATURE, 0, zip64_end_offset, 1)
            end += struct.pack(
                "<IHHHHIIH",
                ZIP_END_SIGNATURE,
                0,
                0,
                ZIP16_LIMIT,
                ZIP16_LIMIT,
                ZIP32_LIMIT,
                ZIP32_LIMIT,
                0,
            )
        else:
            end += struct.pack(
                "<IHHHHIIH",
                ZIP_END_SIGNATURE,
                0,
                0,
                count,
                count,
                directory_size,
                directory_start,
                0,
            )
        data = bytes(records + end)
        os.pwrite(self._fd, data, self._position)
        self._position += len(data)


def _pickle_tree(tree: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=TORCH_PICKLE_PROTOCOL).dump(_replace_slots(tree))
    return buffer.getvalue()
