"""Metadata-only reader for safetensors files: the header, checked against the format's rules.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON, then the
tensor bytes. Each header entry gives a dtype, a shape and ``data_offsets`` relative to the end
of the header. This module reads the first 8 + N bytes only and never imports torch.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from olmo_inspect.errors import CorruptFile
from olmo_inspect.model import StoredBytes, dtype_size

# The safetensors library rejects headers over 100 MB; so do we.
MAX_SAFETENSORS_HEADER = 100_000_000
HEADER_LENGTH_SIZE = 8
METADATA_KEY = "__metadata__"

# safetensors dtype codes and torch's spelling of each.
SAFETENSORS_DTYPES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "C64": "complex64",
    "C128": "complex128",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
TORCH_TO_SAFETENSORS = {torch_name: code for code, torch_name in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class SafetensorsEntry:
    """One tensor of a safetensors header; ``begin``/``end`` are absolute file offsets."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    def stored_bytes(self, file: str) -> StoredBytes:
        return StoredBytes(
            file=file,
            key=self.name,
            dtype=self.dtype,
            data_start=self.begin,
            storage_nbytes=self.nbytes,
        )


@dataclass
class SafetensorsHeader:
    """A parsed and validated safetensors header, entries in file order."""

    path: Path
    header_size: int
    entries: list[SafetensorsEntry]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        return HEADER_LENGTH_SIZE + self.header_size


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Read and validate the header of ``path``.

    Checks the header length against the file size and the 100 MB limit, that the JSON is an
    object, that each entry's dtype is known, its shape is a list of non-negative ints, its
    byte count equals numel times the dtype size, and that the data ranges lie inside the file
    without overlapping.

    Raises:
        CorruptFile: naming the file and the broken rule.
    """
    try:
        file_size = path.stat().st_size
        with path.open("rb") as handle:
            length_bytes = handle.read(HEADER_LENGTH_SIZE)
            if len(length_bytes) < HEADER_LENGTH_SIZE:
                raise CorruptFile(
                    f"{path}: {file_size} bytes is too short for a safetensors file; "
                    "re-copy it from its source"
                )
            (header_size,) = struct.unpack("<Q", length_bytes)
            _check_header_size(path, header_size, file_size)
            raw = handle.read(header_size)
    except OSError as error:
        raise CorruptFile(f"{path}: cannot read the file ({error.strerror})") from error

    if len(raw) < header_size:
        raise CorruptFile(f"{path}: the safetensors header is truncated")
    header = _parse_json(path, raw)
    data_start = HEADER_LENGTH_SIZE + header_size
    metadata = _parse_metadata(path, header.pop(METADATA_KEY, None))
    entries = [_parse_entry(path, name, value, data_start) for name, value in header.items()]
    entries.sort(key=lambda entry: (entry.begin, entry.end))
    _check_ranges(path, entries, file_size)
    return SafetensorsHeader(path=path, header_size=header_size, entries=entries, metadata=metadata)


def _check_header_size(path: Path, header_size: int, file_size: int) -> None:
    if header_size > MAX_SAFETENSORS_HEADER:
        raise CorruptFile(
            f"{path}: safetensors header length {header_size} exceeds the "
            f"{MAX_SAFETENSORS_HEADER}-byte limit; the file is corrupt or not safetensors"
        )
    if HEADER_LENGTH_SIZE + header_size > file_size:
        raise CorruptFile(
            f"{path}: safetensors header claims {header_size} bytes but the file has "
            f"{file_size}; the file is truncated or not safetensors"
        )


def _parse_json(path: Path, raw: bytes) -> dict[str, object]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptFile(f"{path}: the safetensors header is not valid JSON ({error})") from error
    if not isinstance(header, dict):
        raise CorruptFile(f"{path}: the safetensors header is not a JSON object")
    return header


def _parse_metadata(path: Path, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise CorruptFile(f"{path}: safetensors __metadata__ must map strings to strings")
    return value


def _parse_entry(path: Path, name: str, value: object, data_start: int) -> SafetensorsEntry:
    if not isinstance(value, dict):
        raise CorruptFile(f"{path}: header entry {name!r} is not an object")
    code = value.get("dtype")
    dtype = SAFETENSORS_DTYPES.get(code) if isinstance(code, str) else None
    if dtype is None:
        raise CorruptFile(f"{path}: tensor {name!r} has unknown dtype {code!r}")
    shape = value.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape
    ):
        raise CorruptFile(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
    offsets = value.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise CorruptFile(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
    expected = math.prod(shape) * dtype_size(dtype)
    if offsets[1] - offsets[0] != expected:
        raise CorruptFile(
            f"{path}: tensor {name!r} spans {offsets[1] - offsets[0]} bytes but "
            f"{dtype}{shape} needs {expected}"
        )
    return SafetensorsEntry(
        name=name,
        dtype=dtype,
        shape=tuple(shape),
        begin=data_start + offsets[0],
        end=data_start + offsets[1],
    )


def _check_ranges(path: Path, entries: list[SafetensorsEntry], file_size: int) -> None:
    previous_end = 0
    previous_name = ""
    for entry in entries:
        if entry.begin < previous_end:
            raise CorruptFile(
                f"{path}: tensors {previous_name!r} and {entry.name!r} overlap in the file"
            )
        previous_end, previous_name = entry.end, entry.name
    if previous_end > file_size:
        raise CorruptFile(
            f"{path}: the header needs {previous_end} bytes but the file has {file_size}; "
            "it is truncated, re-copy it from its source"
        )
