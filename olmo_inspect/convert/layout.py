"""Decide the files of a conversion's output and which tensor goes where.

For each target kind this module lists the output files (weights, optimizer state, trainer
state, config), assigns every mapped tensor to a file and a key, and builds the object tree of
each ``.pt`` file. It reads no tensor values; the engine decides how each tensor is produced.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from olmo_inspect.convert.pt_writer import TensorSlot, collect_slots
from olmo_inspect.convert.safetensors_writer import (
    OLMO_VALUE_PICKLE_PROTOCOL,
    TRANSFORMERS_INDEX_FILE,
    TRANSFORMERS_METADATA,
    TensorSpec,
    build_header,
    plan_shards,
)
from olmo_inspect.errors import ConversionError
from olmo_inspect.io.olmo_keys import encode_key
from olmo_inspect.model import Checkpoint, CheckpointKind, TensorInfo, dtype_size

MANIFEST_FILE = "olmo-inspect-manifest.json"
CONFIG_YAML = "config.yaml"
CONFIG_JSON = "config.json"
TRAIN_STATE_FILE = "train.pt"
# Trainer state files of OLMo and OLMo-core, in the order a conversion prefers them.
TRAIN_STATE_SOURCES = ("train.pt", "other.pt", "train/rank0.pt")
HF_OLMO_WEIGHTS = "pytorch_model.bin"
# Bytes of zip headers and pickle a .pt file adds per tensor, an estimate for the disk check.
PT_OVERHEAD_PER_TENSOR = 1024
# Size a text file still being built counts with until it is ready: an upper bound, because an
# OLMo-family config.json or generation_config.json is a few KB.
DEFERRED_TEXT_BYTES = 1024 * 1024
# Fields of the reader's param-group summary that stand for the lists it left out.
SUMMARY_COUNT_FIELDS = frozenset({"params_count", "param_names_count"})
# DistributedDataParallel prefixes parameter names with this.
DDP_PREFIX = "module."
FLOATING_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16"})

# The unsharded kind each sharded kind's unshard produces.
UNSHARD_TARGETS: dict[CheckpointKind, CheckpointKind] = {
    CheckpointKind.OLMO_SHARDED_TORCH_LEGACY: CheckpointKind.OLMO_UNSHARDED,
    CheckpointKind.OLMO_SHARDED_TORCH_NEW: CheckpointKind.OLMO_UNSHARDED,
    CheckpointKind.OLMO_SHARDED_LOCAL: CheckpointKind.OLMO_UNSHARDED,
    CheckpointKind.OLMO_SHARDED_OLMO_CORE: CheckpointKind.OLMO_UNSHARDED,
    CheckpointKind.OLMO_CORE: CheckpointKind.OLMO_CORE_UNSHARDED,
}


def unshard_target(kind: CheckpointKind) -> CheckpointKind | None:
    """Return the unsharded kind a sharded ``kind`` becomes, or None for unsharded kinds."""
    return UNSHARD_TARGETS.get(kind)


class Method(str, Enum):
    """Production method of one output tensor: a byte copy or a computed value."""

    COPY = "copy"
    MATERIALISE = "materialise"

    def __str__(self) -> str:
        return self.value


class FileFormat(str, Enum):
    """Write method of one output file."""

    SAFETENSORS = "safetensors"
    PT = "pt"
    TEXT = "text"
    COPY = "copy"

    def __str__(self) -> str:
        return self.value


@dataclass
class TensorStep:
    """One output tensor: where it goes, what it is made from and how.

    ``inputs`` are the source tensors named by ``sources`` (model or optimizer tensors);
    ``literal`` contains the bytes of a pickled non-tensor value, which OLMo's encoded
    safetensors store as uint8 tensors. ``tree_path`` locates the tensor inside a ``.pt`` object.
    """

    target: str
    key: str
    file: str
    shape: tuple[int, ...]
    dtype: str
    source_dtype: str
    sources: tuple[Any, ...]
    inputs: tuple[TensorInfo, ...]
    transform: str | None = None
    reason: str = ""
    role: str = "model"
    literal: bytes | None = None
    tree_path: tuple[str | int, ...] | None = None
    method: Method = Method.MATERIALISE
    why: str = ""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * dtype_size(self.dtype)

    @property
    def source_nbytes(self) -> int:
        total = 0
        for piece, tensor in zip(self.sources, self.inputs, strict=True):
            if piece.rows is None or not tensor.shape:
                total += tensor.nbytes
            else:
                total += (piece.rows[1] - piece.rows[0]) * (
                    tensor.nbytes // max(tensor.shape[0], 1)
                )
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "file": self.file,
            "key": self.key if self.key != self.target else None,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "source_dtype": self.source_dtype,
            "sources": [
                {"name": piece.name, "rows": list(piece.rows) if piece.rows else None}
                for piece in self.sources
            ],
            "transform": self.transform,
            "method": str(self.method),
            "why": self.why,
            "reason": self.reason,
            "role": self.role,
            "bytes": self.nbytes,
        }


@dataclass
class OutputFile:
    """One file of the output folder and how it is written.

    ``deferred`` is set for a text file still being built on another thread (an object with
    ``result() -> dict[str, str]`` keyed by file name). Until ``resolve`` runs, ``content`` is None
    and ``nbytes`` is the upper bound ``DEFERRED_TEXT_BYTES``.
    """

    path: str
    format: FileFormat
    nbytes: int
    tensors: int = 0
    content: str | None = None
    copy_from: str | None = None
    metadata: dict[str, str] | None = None
    tree: Any = None
    deferred: Any = None

    @property
    def pending(self) -> bool:
        return self.deferred is not None

    def resolve(self) -> None:
        """Wait for a deferred text, then set ``content`` and the exact ``nbytes``.

        Raises:
            ConversionError: the text could not be built.
        """
        if self.deferred is None:
            return
        text = self.deferred.result()[self.path]
        self.content = text
        self.nbytes = len(text.encode())
        self.deferred = None

    def to_json(self) -> dict[str, Any]:
        """Return the file's record; waits for a deferred text so that ``bytes`` is exact."""
        self.resolve()
        return {
            "path": self.path,
            "format": str(self.format),
            "bytes": self.nbytes,
            "tensors": self.tensors,
            "copy_from": self.copy_from,
        }


@dataclass
class Layout:
    """The output files and tensor steps of one conversion, plus notes for the plan."""

    files: list[OutputFile] = field(default_factory=list)
    steps: list[TensorStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class IdentitySlice:
    """A whole source tensor, for the identity mapping (same fields as ``SourceSlice``)."""

    name: str
    rows: tuple[int, int] | None = None


@dataclass(frozen=True)
class IdentityMapping:
    """A tensor kept under its own name and shape (same fields as ``TensorMapping``)."""

    target: str
    sources: tuple[IdentitySlice, ...]
    shape: tuple[int, ...]
    transform: str | None = None
    reason: str = ""


@dataclass
class IdentityResult:
    """An identity mapping of a whole checkpoint (same fields as ``MappingResult``)."""

    mappings: list[IdentityMapping]
    dropped: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def identity_mapping(source: Checkpoint) -> IdentityResult:
    """Map every model tensor of ``source`` to itself (unshard and same-kind conversions)."""
    mappings = [
        IdentityMapping(tensor.name, (IdentitySlice(tensor.name),), tuple(tensor.shape))
        for tensor in source.tensors
    ]
    return IdentityResult(mappings=mappings)


def build_layout(source: Checkpoint, target: CheckpointKind, options: Any, mapping: Any) -> Layout:
    """List the output files and tensor steps for ``target``.

    Raises:
        ConversionError: the target kind cannot be written by this tool.
    """
    model_steps = _model_steps(source, mapping, options.dtype)
    layout = Layout()
    deferred = getattr(mapping, "deferred", None)
    if deferred is not None:
        for name in deferred.names:
            layout.files.append(
                OutputFile(name, FileFormat.TEXT, DEFERRED_TEXT_BYTES, deferred=deferred)
            )
    for name, text in mapping.files.items():
        layout.files.append(OutputFile(name, FileFormat.TEXT, len(text.encode()), content=text))
    for name, origin in getattr(mapping, "copy_files", {}).items():
        origin_path = Path(origin)
        layout.files.append(
            OutputFile(
                name, FileFormat.COPY, origin_path.stat().st_size, copy_from=str(origin_path)
            )
        )

    if target == CheckpointKind.TRANSFORMERS:
        _transformers_files(layout, model_steps, options.max_shard_size)
    elif target in (CheckpointKind.OLMO_UNSHARDED, CheckpointKind.OLMO_CORE_UNSHARDED):
        encoded = target == CheckpointKind.OLMO_UNSHARDED
        model_file = "model.safetensors" if options.safetensors else "model.pt"
        _model_file(layout, model_steps, model_file, encoded_keys=encoded)
        if not options.model_only:
            _optimizer_file(layout, source, options.safetensors, encoded_keys=encoded)
            _train_state_file(layout, source)
            config = CONFIG_YAML if target == CheckpointKind.OLMO_UNSHARDED else CONFIG_JSON
            _copied_config(layout, source, config)
    elif target == CheckpointKind.HF_OLMO:
        _model_file(layout, model_steps, HF_OLMO_WEIGHTS, encoded_keys=False)
    else:
        raise ConversionError(
            f"{source.path}: writing {target} is not supported; choose transformers, "
            "olmo-unsharded, olmo-core-unsharded or hf-olmo"
        )
    return layout


def _model_steps(source: Checkpoint, mapping: Any, dtype: str | None) -> list[TensorStep]:
    tensors = {tensor.name: tensor for tensor in source.tensors}
    steps = []
    for item in mapping.mappings:
        inputs = tuple(tensors[piece.name] for piece in item.sources)
        dtypes = {tensor.dtype for tensor in inputs}
        if len(dtypes) != 1:
            raise ConversionError(
                f"{source.path}: {item.target} joins tensors of dtypes {sorted(dtypes)}"
            )
        source_dtype = inputs[0].dtype
        out_dtype = dtype if dtype is not None and source_dtype in FLOATING_DTYPES else source_dtype
        steps.append(
            TensorStep(
                target=item.target,
                key=item.target,
                file="",
                shape=tuple(item.shape),
                dtype=out_dtype,
                source_dtype=source_dtype,
                sources=tuple(item.sources),
                inputs=inputs,
                transform=item.transform,
                reason=item.reason,
            )
        )
    return steps


def _transformers_files(layout: Layout, steps: list[TensorStep], max_shard_size: int | str) -> None:
    specs = [TensorSpec(step.key, step.dtype, step.shape) for step in steps]
    shards = plan_shards(specs, max_shard_size)
    by_key = {step.key: step for step in steps}
    for name, keys in shards.files.items():
        file_specs = [spec for spec in specs if spec.key in set(keys)]
        header = build_header(file_specs, TRANSFORMERS_METADATA)
        for spec in file_specs:
            by_key[spec.key].file = name
        layout.files.append(
            OutputFile(
                name,
                FileFormat.SAFETENSORS,
                len(header) + sum(spec.nbytes for spec in file_specs),
                tensors=len(file_specs),
                metadata=dict(TRANSFORMERS_METADATA),
            )
        )
    ordered = [step for item in layout.files for step in steps if step.file == item.path]
    layout.steps.extend(ordered)
    if shards.sharded:
        text = json.dumps(shards.index(), indent=2) + "\n"
        layout.files.append(
            OutputFile(TRANSFORMERS_INDEX_FILE, FileFormat.TEXT, len(text), content=text)
        )


def _model_file(layout: Layout, steps: list[TensorStep], name: str, encoded_keys: bool) -> None:
    for step in steps:
        step.file = name
    if name.endswith(".safetensors"):
        for step in steps:
            step.key = encode_key((step.target,)) if encoded_keys else step.target
        _add_safetensors(layout, name, steps)
        return

    tree: dict[str, TensorSlot] = {}
    for index, step in enumerate(steps):
        step.key = str(index)
        step.tree_path = (step.target,)
        tree[step.target] = TensorSlot(step.key, step.dtype, step.shape)
    _add_pt(layout, name, steps, tree)


def _add_safetensors(layout: Layout, name: str, steps: list[TensorStep]) -> None:
    specs = [TensorSpec(step.key, step.dtype, step.shape) for step in steps]
    header = build_header(specs)
    size = len(header) + sum(spec.nbytes for spec in specs)
    layout.files.append(OutputFile(name, FileFormat.SAFETENSORS, size, tensors=len(steps)))
    layout.steps.extend(steps)


def _add_pt(layout: Layout, name: str, steps: list[TensorStep], tree: Any) -> None:
    order = {slot.key: position for position, slot in enumerate(collect_slots(tree))}
    ordered = sorted(steps, key=lambda step: order[step.key])
    size = sum(step.nbytes for step in steps) + PT_OVERHEAD_PER_TENSOR * (len(steps) + 1)
    layout.files.append(OutputFile(name, FileFormat.PT, size, tensors=len(steps), tree=tree))
    layout.steps.extend(ordered)


def split_optimizer_name(name: str) -> tuple[str | int, str]:
    """Split an optimizer tensor name into the parameter (name or integer id) and state key.

    Accepts the spellings the readers produce: ``optim.state.<fqn>.<key>`` (DCP),
    ``state.<fqn>.__<key>`` (olmo_core 0.1), ``state.<id>.<key>`` and ``<fqn>.<key>``.
    """
    text = name.removeprefix("optim.").removeprefix("state.")
    parameter, _, key = text.rpartition(".")
    key = key.removeprefix("__")
    if not parameter:
        return text, ""
    return (int(parameter) if parameter.isdigit() else parameter), key


def _optimizer_file(
    layout: Layout, source: Checkpoint, safetensors: bool, encoded_keys: bool
) -> None:
    optimizer = source.optimizer
    if optimizer is None or not optimizer.tensors:
        layout.notes.append("the source has no optimizer state, so none is written")
        return

    steps = []
    for tensor in optimizer.tensors:
        parameter, key = split_optimizer_name(tensor.name)
        path: tuple[str | int, ...] = ("state", parameter, key) if key else ("state", parameter)
        steps.append(
            TensorStep(
                target=tensor.name,
                key=tensor.name,
                file="",
                shape=tuple(tensor.shape),
                dtype=tensor.dtype,
                source_dtype=tensor.dtype,
                sources=(IdentitySlice(tensor.name),),
                inputs=(tensor,),
                role="optim",
                tree_path=path,
            )
        )
    groups, ids = _param_groups(source, layout)
    for step in steps:
        assert step.tree_path is not None
        if len(step.tree_path) == 3 and step.tree_path[1] in ids:
            step.tree_path = ("state", ids[step.tree_path[1]], step.tree_path[2])
    if safetensors:
        _optimizer_safetensors(layout, steps, groups, encoded_keys)
        return

    tree: dict[str, Any] = {"state": {}, "param_groups": groups}
    for index, step in enumerate(steps):
        step.file = "optim.pt"
        step.key = str(index)
        assert step.tree_path is not None
        node = tree
        for part in step.tree_path[:-1]:
            node = node.setdefault(part, {})
        node[step.tree_path[-1]] = TensorSlot(step.key, step.dtype, step.shape)
    _add_pt(layout, "optim.pt", steps, tree)


def _optimizer_safetensors(
    layout: Layout, steps: list[TensorStep], groups: list[Any], encoded_keys: bool
) -> None:
    import pickle

    for step in steps:
        step.file = "optim.safetensors"
        assert step.tree_path is not None
        step.key = (
            encode_key(step.tree_path) if encoded_keys else ".".join(map(str, step.tree_path))
        )
    literal = pickle.dumps(groups, protocol=OLMO_VALUE_PICKLE_PROTOCOL)
    groups_key = encode_key(("param_groups",), True) if encoded_keys else "param_groups"
    steps.append(
        TensorStep(
            target="param_groups",
            key=groups_key,
            file="optim.safetensors",
            shape=(len(literal),),
            dtype="uint8",
            source_dtype="uint8",
            sources=(),
            inputs=(),
            role="value",
            literal=literal,
        )
    )
    _add_safetensors(layout, "optim.safetensors", steps)


def _param_groups(source: Checkpoint, layout: Layout) -> tuple[list[Any], dict[Any, int]]:
    """Return the optimizer's param groups and a parameter-name to integer-id map.

    An unsharded ``optim.pt`` keeps its groups with their ``params`` ids and ``param_names``.
    They are read again from the file's pickle (metadata only), so the output keys the state
    by the same integer ids. Other sources only have the reader's group summary.
    """
    optimizer = source.optimizer
    assert optimizer is not None
    for file in optimizer.files:
        path = Path(source.path) / file
        if path.suffix != ".pt" or not path.is_file():
            continue
        from olmo_inspect.io.torch_file import read_torch_file

        value = read_torch_file(path).value
        groups = value.get("param_groups") if isinstance(value, dict) else None
        if isinstance(groups, list):
            return _plain(groups), _ids_by_name(groups)

    groups = [
        {key: item for key, item in group.items() if key not in SUMMARY_COUNT_FIELDS}
        for group in optimizer.param_groups
    ]
    # NOTE: the reader keeps only counts of each group's parameters, so the written groups have
    # no ``params`` lists and the state is keyed by parameter name.
    layout.notes.append("optimizer param groups are written without their parameter lists")
    return _plain(groups), {}


def _ids_by_name(groups: list[Any]) -> dict[Any, int]:
    ids: dict[Any, int] = {}
    for group in groups:
        if not isinstance(group, dict):
            continue
        for param_id, name in zip(
            group.get("params", []), group.get("param_names", []), strict=False
        ):
            if isinstance(param_id, int) and isinstance(name, str):
                ids[name.removeprefix(DDP_PREFIX)] = param_id
    return ids


def _plain(value: Any) -> Any:
    """Return ``value`` with only plain Python types, so it pickles without foreign classes."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return str(value)


def _train_state_file(layout: Layout, source: Checkpoint) -> None:
    root = Path(source.path)
    for candidate in TRAIN_STATE_SOURCES:
        if (root / candidate).is_file():
            size = (root / candidate).stat().st_size
            layout.files.append(
                OutputFile(TRAIN_STATE_FILE, FileFormat.COPY, size, copy_from=candidate)
            )
            return
    if source.train_state is None:
        layout.notes.append("the source has no trainer state, so no train.pt is written")
        return

    # The reader summarises RNG states as text; OLMo's trainer expects a dict of states under
    # "rng", so the key is left out rather than written with the wrong type.
    kept = {key: value for key, value in source.train_state.fields.items() if key != "rng"}
    fields = _plain(kept)
    layout.files.append(
        OutputFile(TRAIN_STATE_FILE, FileFormat.PT, PT_OVERHEAD_PER_TENSOR, tree=fields)
    )
    layout.notes.append(
        f"train.pt holds the scalar fields of {source.train_state.file}; RNG states are not carried"
    )


def _copied_config(layout: Layout, source: Checkpoint, name: str) -> None:
    if any(item.path == name for item in layout.files):
        return
    path = Path(source.path) / name
    if path.is_file():
        layout.files.append(OutputFile(name, FileFormat.COPY, path.stat().st_size, copy_from=name))
        return
    layout.notes.append(f"the source has no {name}, so none is written")
