"""Reader for Transformers checkpoints of the OLMo family (``transformers``).

Weights are ``model.safetensors``, ``model-XXXXX-of-YYYYY.safetensors`` with
``model.safetensors.index.json``, ``pytorch_model.bin``, or sharded ``.bin`` files with
``pytorch_model.bin.index.json``. The names are those on disk: transformers 5 renames MoE
weights in memory, but the files keep the per-expert names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_inspect.detect import Detection
from olmo_inspect.errors import CorruptFile, InspectError
from olmo_inspect.formats.common import (
    checkpoint_from_detection,
    list_checkpoint_files,
    read_json_config,
)
from olmo_inspect.formats.olmo_unsharded import add_state_dict
from olmo_inspect.formats.state_dict import read_state_dict_file
from olmo_inspect.model import Checkpoint, CheckpointKind

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"

OTHER_ROLES = {
    "config.json": "config",
    "generation_config.json": "config",
    "tokenizer.json": "tokenizer",
    "tokenizer_config.json": "tokenizer",
    "special_tokens_map.json": "tokenizer",
    "vocab.json": "tokenizer",
    "merges.txt": "tokenizer",
}


@dataclass
class WeightFiles:
    """The weight files a Transformers-style folder uses and how they were found."""

    files: list[Path] = field(default_factory=list)
    index: Path | None = None
    weight_map: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    readable: list[Path] = field(default_factory=list)


def find_weight_files(root: Path) -> WeightFiles:
    """Find the weight files: an index first, then the single-file names."""
    for index_name, single_name in (
        (SAFETENSORS_INDEX, SAFETENSORS_SINGLE),
        (BIN_INDEX, BIN_SINGLE),
    ):
        index_path = root / index_name
        if index_path.is_file():
            return _from_index(root, index_path)
        if (root / single_name).is_file():
            return WeightFiles(files=[root / single_name])

    shards = sorted(root.glob("model-*-of-*.safetensors")) or sorted(
        root.glob("pytorch_model-*-of-*.bin")
    )
    if shards:
        return WeightFiles(
            files=shards,
            problems=[f"{root}: {len(shards)} weight shards but no index file"],
        )
    return WeightFiles(
        problems=[
            f"{root}: no weights; expected {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX} with "
            f"shards, {BIN_SINGLE} or {BIN_INDEX}"
        ]
    )


def _from_index(root: Path, index_path: Path) -> WeightFiles:
    index, _ = read_json_config(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in weight_map.items()
    ):
        raise CorruptFile(f"{index_path}: weight_map is missing or not a map of names to files")

    result = WeightFiles(index=index_path, weight_map=weight_map)
    for name in sorted(set(weight_map.values())):
        path = root / name
        if "/" in name or name.startswith(".."):
            raise CorruptFile(f"{index_path}: shard name {name!r} points outside the checkpoint")
        if path.is_file():
            result.files.append(path)
        else:
            result.problems.append(f"{index_path.name} names shard {name}, which is missing")
    return result


def read_weights(checkpoint: Checkpoint, root: Path) -> WeightFiles:
    """Add the tensors of every weight file to ``checkpoint`` and check them against the index."""
    weights = find_weight_files(root)
    checkpoint.problems += weights.problems
    readable = []
    for path in weights.files:
        try:
            add_state_dict(checkpoint, read_state_dict_file(path, root))
        except InspectError as error:
            # One damaged shard: report it and keep listing the others.
            checkpoint.problems.append(str(error))
        else:
            readable.append(path)
    weights.readable = readable

    if weights.index is not None:
        _check_index(checkpoint, weights)
    return weights


def _check_index(checkpoint: Checkpoint, weights: WeightFiles) -> None:
    assert weights.index is not None
    present_files = {path.name for path in weights.readable}
    found = {tensor.name: tensor.file for tensor in checkpoint.tensors}
    missing = [
        name
        for name, file in weights.weight_map.items()
        if file in present_files and found.get(name) != file
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        checkpoint.problems.append(
            f"{weights.index.name} lists {len(missing)} tensor(s) not in their shard: {shown}"
        )
    extra = [name for name in found if name not in weights.weight_map]
    if extra:
        checkpoint.notes.append(
            f"{len(extra)} tensor(s) in the shards are not in {weights.index.name}: "
            + ", ".join(extra[:5])
        )


def roles_for(root: Path, weights: WeightFiles) -> dict[str, str]:
    roles: dict[str, Any] = dict(OTHER_ROLES)
    for path in weights.files:
        roles[path.name] = "model"
    if weights.index is not None:
        roles[weights.index.name] = "index"
    return roles


def read(detection: Detection, *, deep: bool = False) -> Checkpoint:
    """Read a Transformers checkpoint directory as metadata."""
    root = detection.path
    checkpoint = checkpoint_from_detection(detection, CheckpointKind.TRANSFORMERS)
    weights = read_weights(checkpoint, root)
    checkpoint.files = list_checkpoint_files(root, roles_for(root, weights))
    counts: dict[str, int] = {}
    for tensor in checkpoint.tensors:
        counts[tensor.file or ""] = counts.get(tensor.file or "", 0) + 1
    for info in checkpoint.files:
        info.tensors = counts.get(info.path, 0)
    return checkpoint
