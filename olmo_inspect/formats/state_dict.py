"""Tensor lists of unsharded state-dict files: ``torch.save`` files and safetensors files.

Shared by the unsharded OLMo, OLMo-core, Transformers and hf_olmo readers. Reads metadata
only, except the small pickled values that OLMo's encoded safetensors stores as uint8 tensors,
which are read under :data:`MAX_PICKLED_VALUE_BYTES` through the restricted unpickler.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_inspect.errors import CorruptFile, UnsafePickle
from olmo_inspect.formats.common import relative_path
from olmo_inspect.io.olmo_keys import decode_key
from olmo_inspect.io.safetensors_header import SafetensorsHeader, read_safetensors_header
from olmo_inspect.io.torch_file import TorchFile, iter_tensors, read_torch_file
from olmo_inspect.io.unpickler import unpickle
from olmo_inspect.model import TensorInfo, dtype_size

log = logging.getLogger(__name__)

# The largest pickled non-tensor value (an optimizer param group) read from tensor bytes.
MAX_PICKLED_VALUE_BYTES = 1 << 20


@dataclass
class StateDictFile:
    """The tensors of one state-dict file and what else was found in it."""

    path: Path
    tensors: list[TensorInfo]
    problems: list[str] = field(default_factory=list)
    unknown_globals: list[str] = field(default_factory=list)
    encoded_keys: bool = False
    # Non-tensor values of OLMo's encoded safetensors, by decoded key path.
    values: dict[tuple[str | int, ...], Any] = field(default_factory=dict)
    torch_file: TorchFile | None = None
    header: SafetensorsHeader | None = None


def read_state_dict_file(path: Path, root: Path, *, prefix: str = "") -> StateDictFile:
    """Read the tensors of a ``.pt``/``.bin`` or ``.safetensors`` file, as metadata.

    Names are dotted paths of the nested dicts (``prefix`` adds a leading path). OLMo's encoded
    safetensors keys are decoded and the raw key kept as ``stored_key``.
    """
    if path.suffix == ".safetensors":
        return _read_safetensors(path, root)
    return _read_torch(path, root, prefix)


def _read_torch(path: Path, root: Path, prefix: str) -> StateDictFile:
    torch_file = read_torch_file(path)
    file = relative_path(path, root)
    tensors = []
    for name, record in iter_tensors(torch_file.value, prefix):
        tensors.append(
            TensorInfo(
                name=name,
                shape=record.shape,
                dtype=record.dtype,
                file=file,
                data=torch_file.stored_bytes(record, file),
            )
        )
    problems = torch_file.storage_problems()
    problems += _extent_problems(tensors, file)
    return StateDictFile(
        path=path,
        tensors=tensors,
        problems=problems,
        unknown_globals=torch_file.unknown_globals,
        torch_file=torch_file,
    )


def _extent_problems(tensors: list[TensorInfo], file: str) -> list[str]:
    """Return a sentence for every tensor that reaches past the end of its storage."""
    problems = []
    for tensor in tensors:
        data = tensor.data
        if data is None or tensor.numel == 0 or data.stride is None:
            continue
        last = data.storage_offset + sum(
            (size - 1) * stride for size, stride in zip(tensor.shape, data.stride, strict=False)
        )
        needed = (last + 1) * dtype_size(tensor.dtype)
        if data.storage_nbytes and needed > data.storage_nbytes:
            problems.append(
                f"{file}: tensor {tensor.name} needs {needed} bytes of storage {data.key}, "
                f"which holds {data.storage_nbytes}"
            )
    return problems


def _read_safetensors(path: Path, root: Path) -> StateDictFile:
    header = read_safetensors_header(path)
    file = relative_path(path, root)
    result = StateDictFile(path=path, tensors=[], header=header)

    decoded = [decode_key(entry.name) for entry in header.entries]
    result.encoded_keys = bool(decoded) and all(key is not None for key in decoded)
    for entry, key in zip(header.entries, decoded, strict=True):
        if not result.encoded_keys or key is None:
            result.tensors.append(
                TensorInfo(
                    entry.name, entry.shape, entry.dtype, file, data=entry.stored_bytes(file)
                )
            )
            continue
        if key.value_is_pickled:
            result.values[key.path] = _read_pickled_value(path, entry.begin, entry.nbytes)
            continue
        result.tensors.append(
            TensorInfo(
                name=key.dotted,
                shape=entry.shape,
                dtype=entry.dtype,
                file=file,
                stored_key=entry.name,
                data=entry.stored_bytes(file),
            )
        )
    return result


def _read_pickled_value(path: Path, offset: int, nbytes: int) -> Any:
    if nbytes > MAX_PICKLED_VALUE_BYTES:
        return f"<pickled value of {nbytes} bytes, over the {MAX_PICKLED_VALUE_BYTES}-byte cap>"
    try:
        with path.open("rb") as handle:
            raw = os.pread(handle.fileno(), nbytes, offset)
    except OSError as error:
        raise CorruptFile(f"{path}: cannot read a pickled value ({error.strerror})") from error
    try:
        return unpickle(raw, str(path)).value
    except (CorruptFile, UnsafePickle) as error:
        return f"<unreadable pickled value: {error}>"
