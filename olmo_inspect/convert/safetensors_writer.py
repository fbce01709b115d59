"""Write safetensors files one tensor at a time, and plan Transformers shards.

The ``safetensors`` library's ``save_file`` needs every tensor in memory at once, so this module
writes the format itself: an 8-byte little-endian header length, a JSON header (dtype code,
shape and ``data_offsets`` back to back from 0 with no holes, optional ``__metadata__``) padded
with spaces to a multiple of 8, then each tensor's bytes in header order. The header is built
from metadata before any tensor is read. Files are read back with the library, never here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_inspect.convert.bytecopy import copy_range
from olmo_inspect.errors import ConversionError, UnsupportedFormat
from olmo_inspect.io.safetensors_header import TORCH_TO_SAFETENSORS
from olmo_inspect.model import dtype_size

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# safetensors dtype codes, keyed by torch's dtype spelling: the reader's table, inverted.
SAFETENSORS_DTYPES = TORCH_TO_SAFETENSORS
# The header is padded with spaces so the data starts at a multiple of this many bytes.
HEADER_ALIGNMENT = 8
HEADER_LENGTH_BYTES = 8
# Transformers checks this ``__metadata__`` entry when it loads a safetensors file.
TRANSFORMERS_METADATA = {"format": "pt"}
TRANSFORMERS_WEIGHTS_PATTERN = "model{suffix}.safetensors"
TRANSFORMERS_INDEX_FILE = "model.safetensors.index.json"
# Pickle protocol of OLMo's pickled non-tensor values; the upstream writer used Python's
# default, which is 4 on Python 3.8-3.13.
OLMO_VALUE_PICKLE_PROTOCOL = 4


@dataclass(frozen=True)
class TensorSpec:
    """One tensor an output file will hold: its on-disk key, dtype and shape."""

    key: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * dtype_size(self.dtype)


def build_header(specs: list[TensorSpec], metadata: dict[str, str] | None = None) -> bytes:
    """Build the length prefix and padded JSON header for ``specs``, in their order.

    Raises:
        UnsupportedFormat: a dtype has no safetensors code.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for spec in specs:
        code = SAFETENSORS_DTYPES.get(spec.dtype)
        if code is None:
            raise UnsupportedFormat(
                f"{spec.key}: dtype {spec.dtype} cannot be stored in safetensors"
            )
        header[spec.key] = {
            "dtype": code,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes

    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    padding = (-len(text)) % HEADER_ALIGNMENT
    text += b" " * padding
    return struct.pack("<Q", len(text)) + text


class SafetensorsWriter:
    """Stream tensors into one safetensors file in the order of ``specs``.

    Call ``write_tensor`` or ``copy_bytes`` once per spec, in order, then ``close``.
    """

    def __init__(
        self, path: Path, specs: list[TensorSpec], metadata: dict[str, str] | None = None
    ) -> None:
        self.path = path
        self.specs = specs
        header = build_header(specs, metadata)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, header)
        self._position = len(header)
        self._next = 0

    def write_tensor(self, key: str, value: torch.Tensor) -> None:
        """Append ``value`` as the next tensor; its dtype and shape must match the spec."""
        spec = self._take(key)
        if dtype_name_of(value) != spec.dtype or tuple(value.shape) != spec.shape:
            raise ConversionError(
                f"{self.path}: tensor {key} is {dtype_name_of(value)} {tuple(value.shape)}, "
                f"but the header says {spec.dtype} {spec.shape}"
            )
        data = tensor_bytes(value)
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], self._position + written)
        self._position += len(data)

    def copy_bytes(self, key: str, ranges: list[tuple[int, int, int]]) -> None:
        """Append the next tensor by copying ``(fd, offset, length)`` source ranges in order."""
        spec = self._take(key)
        total = sum(length for _, _, length in ranges)
        if total != spec.nbytes:
            raise ConversionError(
                f"{self.path}: byte ranges for {key} hold {total} bytes, expected {spec.nbytes}"
            )
        for source_fd, offset, length in ranges:
            copy_range(source_fd, offset, length, self._fd, self._position)
            self._position += length

    def close(self) -> None:
        """Flush and close the file; raises ConversionError when a spec was never written."""
        os.fsync(self._fd)
        os.close(self._fd)
        if self._next != len(self.specs):
            raise ConversionError(
                f"{self.path}: {len(self.specs) - self._next} tensors were never written"
            )

    def abort(self) -> None:
        """Close the file without checks (the caller removes the output folder)."""
        try:
            os.close(self._fd)
        except OSError:
            log.debug("closing %s after an error failed", self.path)

    def _take(self, key: str) -> TensorSpec:
        if self._next >= len(self.specs) or self.specs[self._next].key != key:
            expected = self.specs[self._next].key if self._next < len(self.specs) else "nothing"
            raise ConversionError(
                f"{self.path}: got tensor {key} but the next in order is {expected}"
            )
        spec = self.specs[self._next]
        self._next += 1
        return spec


def dtype_name_of(value: torch.Tensor) -> str:
    return str(value.dtype).removeprefix("torch.")


def tensor_bytes(value: torch.Tensor) -> memoryview:
    """Return the row-major bytes of ``value`` (moved to the CPU) without another copy."""
    import torch

    flat = value.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


@dataclass
class ShardPlan:
    """Split of Transformers weights into files: file names, tensors per file, total bytes."""

    files: dict[str, list[str]]
    total_size: int

    @property
    def sharded(self) -> bool:
        return len(self.files) > 1

    def index(self) -> dict[str, Any]:
        """Return the ``model.safetensors.index.json`` content for a sharded plan."""
        weight_map = {key: name for name, keys in self.files.items() for key in keys}
        return {
            "metadata": {"total_size": self.total_size},
            "weight_map": dict(sorted(weight_map.items())),
        }


def plan_shards(specs: list[TensorSpec], max_shard_size: int | str) -> ShardPlan:
    """Split ``specs`` into Transformers weight files the way huggingface_hub does.

    Uses ``huggingface_hub.split_state_dict_into_shards_factory`` on byte sizes, so the file
    names (``model-00001-of-00003.safetensors``) and the greedy split match
    ``save_pretrained``.
    """
    from huggingface_hub.serialization import split_state_dict_into_shards_factory

    sizes = {spec.key: spec.nbytes for spec in specs}
    split = split_state_dict_into_shards_factory(
        sizes,
        get_storage_size=lambda size: size,
        filename_pattern=TRANSFORMERS_WEIGHTS_PATTERN,
        max_shard_size=max_shard_size,
    )
    return ShardPlan(
        files=dict(split.filename_to_tensors), total_size=int(split.metadata["total_size"])
    )


def pickled_value_tensor(value: Any) -> torch.Tensor:
    """Return ``value`` pickled into a uint8 tensor, as OLMo stores non-tensor values."""
    import torch

    data = bytearray(pickle.dumps(value, protocol=OLMO_VALUE_PICKLE_PROTOCOL))
    return torch.frombuffer(data, dtype=torch.uint8)


def check_dtype_supported(dtype: str) -> None:
    """Raise UnsupportedFormat when ``dtype`` has no safetensors code."""
    if dtype not in SAFETENSORS_DTYPES:
        raise UnsupportedFormat(f"dtype {dtype} cannot be stored in safetensors")
