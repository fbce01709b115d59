"""Plain records that describe a checkpoint: what the readers build and everything else renders.

Nothing here reads files or imports torch. Shapes are tuples of ints, dtypes are torch's
spelling without the ``torch.`` prefix (``float32``, ``bfloat16``), byte counts are ints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

# Bytes per element for every dtype the readers can meet, in torch's spelling.
DTYPE_SIZES: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1,
    "complex128": 16,
    "complex64": 8,
    "complex32": 4,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint64": 8,
    "uint32": 4,
    "uint16": 2,
    "uint8": 1,
    "bool": 1,
}


def dtype_size(dtype: str) -> int:
    """Return the bytes per element of ``dtype``, or 0 for a dtype this tool does not know."""
    return DTYPE_SIZES.get(dtype, 0)


class CheckpointKind(str, Enum):
    """The kinds of checkpoint directory; values are the ``kind`` of ``--json`` and ``--to``."""

    OLMO_UNSHARDED = "olmo-unsharded"
    OLMO_SHARDED_TORCH_LEGACY = "olmo-sharded-torch-legacy"
    OLMO_SHARDED_TORCH_NEW = "olmo-sharded-torch-new"
    OLMO_SHARDED_LOCAL = "olmo-sharded-local"
    OLMO_SHARDED_OLMO_CORE = "olmo-sharded-olmo-core"
    OLMO_CORE = "olmo-core"
    OLMO_CORE_UNSHARDED = "olmo-core-unsharded"
    TRANSFORMERS = "transformers"
    HF_OLMO = "hf-olmo"

    def __str__(self) -> str:
        return self.value

    @property
    def is_sharded(self) -> bool:
        return self in SHARDED_KINDS


SHARDED_KINDS = frozenset(
    {
        CheckpointKind.OLMO_SHARDED_TORCH_LEGACY,
        CheckpointKind.OLMO_SHARDED_TORCH_NEW,
        CheckpointKind.OLMO_SHARDED_LOCAL,
        CheckpointKind.OLMO_SHARDED_OLMO_CORE,
        CheckpointKind.OLMO_CORE,
    }
)


@dataclass(frozen=True)
class StoredBytes:
    """Location of the bytes of one stored tensor (or shard piece) inside a file.

    ``data_start`` is the absolute file offset of element 0 of the *storage*; the tensor's own
    first element is ``storage_offset`` elements later. ``stride`` is in elements. A reader
    that cannot tell where the bytes are (a compressed zip entry, a DCP item before its inner
    zip is resolved) leaves ``data_start`` as None.
    """

    file: str
    key: str
    dtype: str
    data_start: int | None
    storage_nbytes: int
    storage_offset: int = 0
    stride: tuple[int, ...] | None = None

    def is_contiguous(self, shape: tuple[int, ...]) -> bool:
        """Return True when ``stride`` is the row-major stride of ``shape`` (or unknown: dense)."""
        if self.stride is None:
            return True
        return self.stride == contiguous_stride(shape) or math.prod(shape) <= 1


def contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return the row-major (C-contiguous) stride of ``shape``, in elements."""
    stride: list[int] = []
    step = 1
    for size in reversed(shape):
        stride.append(step)
        step *= max(size, 1)
    return tuple(reversed(stride))


@dataclass(frozen=True)
class ShardPiece:
    """One stored piece of a sharded tensor.

    Rectangular pieces (torch_legacy, DCP, olmo_core with ``local_shape``) set ``offsets`` and
    ``shape``. Flat-parameter pieces (``local``, olmo_core ``flattened_offsets``) set
    ``flat_range``: end-exclusive element offsets into the row-major flattened tensor.
    ``byte_range`` is the stored item's range in ``file`` when the format records one.
    """

    rank: int | None
    file: str
    key: str | None
    numel: int
    offsets: tuple[int, ...] | None = None
    shape: tuple[int, ...] | None = None
    flat_range: tuple[int, int] | None = None
    byte_range: tuple[int, int] | None = None
    data: StoredBytes | None = None
    missing: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "missing": self.missing,
            "rank": self.rank,
            "file": self.file,
            "key": self.key,
            "numel": self.numel,
            "offsets": list(self.offsets) if self.offsets is not None else None,
            "shape": list(self.shape) if self.shape is not None else None,
            "flat_range": list(self.flat_range) if self.flat_range is not None else None,
            "byte_range": list(self.byte_range) if self.byte_range is not None else None,
        }


@dataclass
class TensorInfo:
    """One tensor of the logical (unsharded) state dict.

    ``name`` follows the unsharded naming rule (OLMo's encoded keys decoded, DCP ``model.``
    and FSDP ``_fsdp_wrapped_module.`` removed); ``stored_key`` keeps the key on disk when it
    differs. Unsharded tensors set ``data``; sharded ones list their ``shards``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: str | None
    stored_key: str | None = None
    data: StoredBytes | None = None
    shards: list[ShardPiece] = field(default_factory=list)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * dtype_size(self.dtype)

    @property
    def offset(self) -> int | None:
        """Absolute byte offset of the tensor's first element in ``file``, when known."""
        if self.data is None or self.data.data_start is None:
            return None
        return self.data.data_start + self.data.storage_offset * dtype_size(self.data.dtype)

    def to_json(self, with_shards: bool = False) -> dict[str, Any]:
        record: dict[str, Any] = {
            "name": self.name,
            "stored_key": self.stored_key,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "bytes": self.nbytes,
            "file": self.file,
            "offset": self.offset,
        }
        if with_shards:
            record["shards"] = [piece.to_json() for piece in self.shards]
        return record


@dataclass
class FileInfo:
    """One file of a checkpoint directory: its path relative to the checkpoint, size and role."""

    path: str
    bytes: int
    role: str
    rank: int | None = None
    tensors: int = 0
    missing: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "bytes": self.bytes,
            "role": self.role,
            "rank": self.rank,
            "tensors": self.tensors,
            "missing": self.missing,
        }


@dataclass
class TrainState:
    """Trainer state: the step, tokens seen and the other scalar fields, from ``file``."""

    file: str
    step: int | None
    tokens_seen: int | None
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "fields": self.fields,
        }


@dataclass
class OptimizerInfo:
    """Optimizer state, listed apart from the model with the same tensor schema."""

    kind: str
    param_groups: list[dict[str, Any]] = field(default_factory=list)
    state_keys: list[str] = field(default_factory=list)
    tensors: list[TensorInfo] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(tensor.nbytes for tensor in self.tensors)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "param_groups": self.param_groups,
            "state_keys": self.state_keys,
            "bytes": self.nbytes,
            "files": self.files,
        }


@dataclass
class Checkpoint:
    """Metadata of one checkpoint directory (or single file), as the readers found it.

    ``problems`` lists what makes the checkpoint invalid or incomplete, one sentence each;
    ``evidence`` lists why the detector chose ``kind``. ``config`` is the parsed config file
    (``config_file`` names it), ``config_text`` its raw text for display.
    """

    path: Path
    kind: CheckpointKind
    tensors: list[TensorInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    config_file: str | None = None
    config_text: str | None = None
    train_state: TrainState | None = None
    optimizer: OptimizerInfo | None = None
    files: list[FileInfo] = field(default_factory=list)
    world_size: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.problems and bool(self.tensors)

    @property
    def step(self) -> int | None:
        return self.train_state.step if self.train_state is not None else None

    @property
    def nbytes(self) -> int:
        return sum(tensor.nbytes for tensor in self.tensors)

    @property
    def files_bytes(self) -> int:
        return sum(info.bytes for info in self.files)

    def tensor(self, name: str) -> TensorInfo:
        """Return the model tensor called ``name``; raises KeyError when there is none."""
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise KeyError(name)


@dataclass
class Summary:
    """Model facts derived from the config and the tensor shapes.

    ``mismatches`` lists every place where the config and the tensors disagree, one sentence
    each. ``generation`` names the OLMo architecture the tensor names indicate.
    """

    parameters: int
    bytes: int
    bytes_per_dtype: dict[str, int] = field(default_factory=dict)
    layers: int | None = None
    d_model: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    mlp_hidden_size: int | None = None
    vocab_size: int | None = None
    embedding_size: int | None = None
    context_length: int | None = None
    weight_tying: bool | None = None
    activation: str | None = None
    norm: str | None = None
    generation: str | None = None
    mismatches: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunEntry:
    """One checkpoint found in a training run folder."""

    path: Path
    step: int | None
    kind: CheckpointKind | None
    bytes: int
    complete: bool
    latest: bool
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "step": self.step,
            "kind": str(self.kind) if self.kind is not None else None,
            "bytes": self.bytes,
            "complete": self.complete,
            "latest": self.latest,
            "problems": self.problems,
        }


@dataclass
class RunFolder:
    """A folder a training run writes: several step checkpoints and ``latest`` links."""

    path: Path
    checkpoints: list[RunEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "run",
            "path": str(self.path),
            "checkpoints": [entry.to_json() for entry in self.checkpoints],
            "notes": self.notes,
        }
