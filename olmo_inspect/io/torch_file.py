"""Metadata-only reader for ``torch.save`` files, in the zip format and the legacy format.

It reads the pickle through :mod:`olmo_inspect.io.unpickler` and locates each storage's bytes
in the file (zip entry data offset, or the legacy layout's running offset) without reading
them. It never imports torch.
"""

from __future__ import annotations

import io
import logging
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_inspect.errors import CorruptFile, UnsupportedFormat
from olmo_inspect.io.unpickler import StorageRecord, TensorRecord, load_stream
from olmo_inspect.model import StoredBytes, dtype_size

log = logging.getLogger(__name__)

# The largest data.pkl read into memory. torch_legacy rank files repeat every rank's shard
# metadata, so their pickles grow with tensors x world size; 1 GiB leaves room for that.
MAX_PICKLE_BYTES = 1 << 30

ZIP_LOCAL_HEADER_SIZE = 30
ZIP_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"

# torch's legacy (non-zip) format starts with this number, pickled with protocol 2.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
LEGACY_NUMEL_SIZE = 8


@dataclass(frozen=True)
class StorageLocation:
    """Location of one storage's bytes; ``data_start`` is None for a compressed zip entry."""

    key: str
    data_start: int | None
    nbytes: int


@dataclass
class TorchFile:
    """A ``torch.save`` file read as metadata: the object tree and where each storage lies."""

    path: Path
    format: str
    value: Any
    storages: dict[str, StorageLocation]
    records: dict[str, StorageRecord]
    unknown_globals: list[str] = field(default_factory=list)

    def stored_bytes(self, tensor: TensorRecord, file: str) -> StoredBytes:
        """Return where ``tensor``'s storage lies, with ``file`` as the path to record."""
        key = tensor.storage.key
        location = self.storages.get(key)
        storage_offset = tensor.storage_offset
        if tensor.storage.view is not None:
            storage_offset += tensor.storage.view[1]
        return StoredBytes(
            file=file,
            key=key,
            dtype=tensor.dtype,
            data_start=location.data_start if location is not None else None,
            storage_nbytes=location.nbytes if location is not None else 0,
            storage_offset=storage_offset,
            stride=tensor.stride,
        )

    def storage_problems(self) -> list[str]:
        """Return one sentence per storage that is missing or shorter than the pickle states."""
        problems = []
        for key, record in self.records.items():
            location = self.storages.get(key)
            needed = record.numel * max(dtype_size(record.dtype), 1)
            if location is None:
                problems.append(f"{self.path}: storage {key} is named in the pickle but missing")
            elif location.nbytes < needed:
                problems.append(
                    f"{self.path}: storage {key} holds {location.nbytes} bytes, "
                    f"the pickle needs {needed}"
                )
        return problems


def is_zip_file(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == ZIP_LOCAL_HEADER_SIGNATURE


def read_torch_file(path: Path) -> TorchFile:
    """Read ``path`` as a ``torch.save`` file without reading tensor bytes.

    Raises:
        CheckpointNotFound, CorruptFile, UnsafePickle, UnsupportedFormat: with the path named.
    """
    try:
        size = path.stat().st_size
    except OSError as error:
        raise CorruptFile(f"{path}: cannot read the file ({error.strerror})") from error
    if size == 0:
        raise CorruptFile(f"{path}: the file is empty; re-copy it from its source")

    if is_zip_file(path):
        return _read_zip(path)
    return _read_legacy(path, size)


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise CorruptFile(
            f"{path}: not a valid torch.save zip ({error}); the file is probably truncated, "
            "re-copy it from its source"
        ) from error
    except OSError as error:
        raise CorruptFile(f"{path}: cannot read the file ({error.strerror})") from error


def _find_pickle_entry(path: Path, archive: zipfile.ZipFile) -> tuple[str, zipfile.ZipInfo]:
    for info in archive.infolist():
        parts = info.filename.split("/")
        if len(parts) == 2 and parts[1] == "data.pkl":
            return parts[0], info
    raise CorruptFile(
        f"{path}: zip file without a data.pkl entry, so it was not written by torch.save"
    )


def zip_storage_locations(
    path: Path, archive: zipfile.ZipFile | None = None
) -> dict[str, StorageLocation]:
    """Return the location of every ``<prefix>/data/<key>`` entry, from the zip directory only.

    Each entry costs one 30-byte read of its local header; no pickle is parsed.
    """
    owned = archive is None
    archive = archive or _open_zip(path)
    try:
        locations: dict[str, StorageLocation] = {}
        with path.open("rb") as handle:
            for info in archive.infolist():
                parts = info.filename.split("/")
                if len(parts) != 3 or parts[1] != "data":
                    continue
                data_start = None
                if info.compress_type == zipfile.ZIP_STORED:
                    data_start = _entry_data_start(path, handle, info)
                locations[parts[2]] = StorageLocation(parts[2], data_start, info.file_size)
        return locations
    finally:
        if owned:
            archive.close()


def _entry_data_start(path: Path, handle: io.BufferedReader, info: zipfile.ZipInfo) -> int:
    handle.seek(info.header_offset)
    header = handle.read(ZIP_LOCAL_HEADER_SIZE)
    if len(header) < ZIP_LOCAL_HEADER_SIZE or header[:4] != ZIP_LOCAL_HEADER_SIGNATURE:
        raise CorruptFile(
            f"{path}: zip entry {info.filename} has no local header at offset "
            f"{info.header_offset}; the file is corrupt, re-copy it from its source"
        )
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + ZIP_LOCAL_HEADER_SIZE + name_length + extra_length


def _read_zip(path: Path) -> TorchFile:
    archive = _open_zip(path)
    with archive:
        _, pickle_info = _find_pickle_entry(path, archive)
        if pickle_info.file_size > MAX_PICKLE_BYTES:
            raise UnsupportedFormat(
                f"{path}: data.pkl is {pickle_info.file_size} bytes, over the "
                f"{MAX_PICKLE_BYTES}-byte limit for metadata"
            )
        try:
            data = archive.read(pickle_info)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise CorruptFile(f"{path}: cannot read {pickle_info.filename} ({error})") from error
        locations = zip_storage_locations(path, archive)

    result = load_stream(io.BytesIO(data), str(path))
    records = {record.key: record for record in result.storages}
    log.debug("read %s: zip format, %d storages", path, len(records))
    return TorchFile(
        path=path,
        format="zip",
        value=result.value,
        storages=locations,
        records=records,
        unknown_globals=result.unknown_globals,
    )


def _read_legacy(path: Path, size: int) -> TorchFile:
    with path.open("rb") as handle:
        source = str(path)
        try:
            magic = load_stream(handle, source).value
        except CorruptFile as error:
            raise UnsupportedFormat(
                f"{path}: neither a torch.save zip nor torch's legacy format; "
                "pass a .pt, .bin or .safetensors file"
            ) from error
        if magic != LEGACY_MAGIC_NUMBER:
            raise UnsupportedFormat(
                f"{path}: a pickle, but not one written by torch.save; "
                "pass a .pt, .bin or .safetensors file"
            )
        protocol = load_stream(handle, source).value
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise UnsupportedFormat(f"{path}: torch legacy protocol {protocol!r} is not supported")
        load_stream(handle, source)
        main = load_stream(handle, source)
        keys = load_stream(handle, source).value
        if not isinstance(keys, list):
            raise CorruptFile(f"{path}: the legacy storage key list is malformed")

        records = {record.key: record for record in main.storages}
        locations: dict[str, StorageLocation] = {}
        position = handle.tell()
        for key in keys:
            record = records.get(str(key))
            item_size = dtype_size(record.dtype) if record is not None else 0
            handle.seek(position)
            numel_bytes = handle.read(LEGACY_NUMEL_SIZE)
            if len(numel_bytes) < LEGACY_NUMEL_SIZE:
                break
            numel = struct.unpack("<q", numel_bytes)[0]
            data_start = position + LEGACY_NUMEL_SIZE
            nbytes = max(0, min(numel * item_size, size - data_start))
            locations[str(key)] = StorageLocation(str(key), data_start, nbytes)
            position = data_start + numel * item_size

    log.debug("read %s: legacy format, %d storages", path, len(records))
    return TorchFile(
        path=path,
        format="legacy",
        value=main.value,
        storages=locations,
        records=records,
        unknown_globals=main.unknown_globals,
    )


def iter_tensors(value: Any, prefix: str = "") -> Iterator[tuple[str, TensorRecord]]:
    """Yield ``(dotted_name, record)`` for every tensor in a nested dict/list tree."""
    if isinstance(value, TensorRecord):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from iter_tensors(item, f"{prefix}.{index}" if prefix else str(index))
