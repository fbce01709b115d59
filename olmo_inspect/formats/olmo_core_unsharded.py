"""Reader for OLMo-core's unsharded output (``unshard_checkpoint`` and conversions to it).

Weights are ``model.pt`` or ``model.safetensors`` (one file), or a ``model/`` folder with one
file per tensor or ``chunk-NNNNN.pt``/``.safetensors`` files of several tensors, all with plain
OLMo-core keys (``blocks.0.attention.w_q.weight``). Next to them: ``config.json`` (the
experiment config), optionally ``optim.pt`` (torch's optimizer state dict, keyed by parameter
name, unflattened or flattened) and ``train.pt``. Reads metadata only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_inspect.errors import IncompleteCheckpoint, InspectError
from olmo_inspect.formats.common import checkpoint_from_detection, read_train_state
from olmo_inspect.formats.dcp import (
    checkpoint_files,
    clean_name,
    file_record,
    param_groups_from_values,
)
from olmo_inspect.formats.optimizer import optimizer_from_state_dict
from olmo_inspect.formats.state_dict import StateDictFile, read_state_dict_file
from olmo_inspect.model import Checkpoint, CheckpointKind, FileInfo, OptimizerInfo, TensorInfo

if TYPE_CHECKING:
    from olmo_inspect.detect import Detection

log = logging.getLogger(__name__)

MODEL_FILES = ("model.safetensors", "model.pt")
MODEL_DIR = "model"
OPTIM_FILE = "optim.pt"
TRAIN_FILE = "train.pt"
WEIGHT_SUFFIXES = (".safetensors", ".pt")
FLAT_STATE_PREFIX = "state."
FLAT_GROUPS_PREFIX = "param_groups."
FLAT_OPTIMIZER_KIND = "torch.optim state_dict (flattened by parameter name)"


def read(detection: Detection, *, deep: bool = False) -> Checkpoint:
    """Read an OLMo-core unsharded checkpoint directory as metadata.

    ``deep`` changes nothing: every tensor's location is known from the headers and pickles.

    Raises:
        IncompleteCheckpoint: there is no model file.
        CorruptFile, UnsupportedFormat, UnsafePickle: a model file cannot be read.
    """
    root = detection.path
    checkpoint = checkpoint_from_detection(detection, CheckpointKind.OLMO_CORE_UNSHARDED)

    known: list[FileInfo] = []
    for path in _model_paths(root):
        source = read_state_dict_file(path, root)
        _add_model_file(checkpoint, source, known)
    names = [tensor.name for tensor in checkpoint.tensors]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        checkpoint.problems.append(
            f"tensors stored in more than one model file: {', '.join(duplicates)}"
        )

    optim_path = root / OPTIM_FILE
    if optim_path.is_file():
        _add_optimizer(checkpoint, optim_path, known)

    train_path = root / TRAIN_FILE
    if train_path.is_file():
        try:
            checkpoint.train_state, _ = read_train_state(train_path, root)
        except InspectError as error:
            checkpoint.problems.append(f"{TRAIN_FILE}: the trainer state cannot be read ({error})")
        known.append(file_record(train_path, TRAIN_FILE, "train"))

    if detection.config_file is not None:
        known.append(file_record(root / detection.config_file, detection.config_file, "config"))
    checkpoint.files = checkpoint_files(root, known)
    return checkpoint


def _model_paths(root: Path) -> list[Path]:
    for name in MODEL_FILES:
        if (root / name).is_file():
            return [root / name]
    folder = root / MODEL_DIR
    if folder.is_dir():
        paths = sorted(
            path for path in folder.iterdir() if path.is_file() and path.suffix in WEIGHT_SUFFIXES
        )
        if paths:
            return paths
    raise IncompleteCheckpoint(
        f"{root}: no model weights; expected model.safetensors, model.pt or model/ with "
        "chunk-NNNNN.pt or .safetensors files next to config.json"
    )


def _add_model_file(checkpoint: Checkpoint, source: StateDictFile, known: list[FileInfo]) -> None:
    for tensor in source.tensors:
        name = clean_name(tensor.name)
        if name != tensor.name:
            tensor.stored_key = tensor.stored_key or tensor.name
            tensor.name = name
    checkpoint.tensors.extend(source.tensors)
    checkpoint.problems.extend(source.problems)
    if source.unknown_globals:
        checkpoint.notes.append(
            f"{source.path.name} names classes off the allow-list, kept as inert placeholders: "
            + ", ".join(source.unknown_globals)
        )
    shown = source.tensors[0].file if source.tensors else source.path.name
    known.append(
        file_record(source.path, shown or source.path.name, "model", tensors=len(source.tensors))
    )


def _add_optimizer(checkpoint: Checkpoint, path: Path, known: list[FileInfo]) -> None:
    try:
        source = read_state_dict_file(path, checkpoint.path)
    except InspectError as error:
        checkpoint.problems.append(f"{OPTIM_FILE}: the optimizer state cannot be read ({error})")
        return
    checkpoint.problems.extend(source.problems)

    value = source.torch_file.value if source.torch_file is not None else None
    if isinstance(value, dict) and any(
        isinstance(key, str) and key.startswith(FLAT_STATE_PREFIX) for key in value
    ):
        checkpoint.optimizer = _flat_optimizer(source, value)
    else:
        checkpoint.optimizer = optimizer_from_state_dict(source, checkpoint.path)
    known.append(file_record(path, OPTIM_FILE, "optim", tensors=len(checkpoint.optimizer.tensors)))


def _flat_optimizer(source: StateDictFile, value: dict[Any, Any]) -> OptimizerInfo:
    """Build OptimizerInfo from a flattened state dict.

    Its keys are ``state.<fqn>.<key>`` (tensors) and ``param_groups.<fqn>.<field>`` (values).
    """
    tensors: list[TensorInfo] = []
    state_keys: set[str] = set()
    for tensor in source.tensors:
        if not tensor.name.startswith(FLAT_STATE_PREFIX):
            continue
        fqn, _, key = tensor.name.removeprefix(FLAT_STATE_PREFIX).rpartition(".")
        state_keys.add(key)
        tensors.append(
            TensorInfo(
                name=f"{clean_name(fqn)}.{key}",
                shape=tensor.shape,
                dtype=tensor.dtype,
                file=tensor.file,
                stored_key=tensor.name,
                data=tensor.data,
            )
        )
    group_values = {
        str(key): item
        for key, item in value.items()
        if isinstance(key, str) and key.startswith(FLAT_GROUPS_PREFIX)
    }
    return OptimizerInfo(
        kind=FLAT_OPTIMIZER_KIND,
        param_groups=param_groups_from_values(group_values),
        state_keys=sorted(state_keys),
        tensors=tensors,
        files=[OPTIM_FILE],
    )
