"""Reader for unsharded OLMo trainer checkpoints (``olmo-unsharded``).

Files: ``config.yaml``; ``model.pt`` or ``model.safetensors`` (OLMo-encoded or plain keys);
optional ``optim.pt``/``optim.safetensors``; ``train.pt`` or the legacy ``other.pt``.
"""

from __future__ import annotations

from pathlib import Path

from olmo_inspect.detect import Detection
from olmo_inspect.errors import InspectError
from olmo_inspect.formats.common import (
    checkpoint_from_detection,
    list_checkpoint_files,
    read_train_state,
)
from olmo_inspect.formats.optimizer import optimizer_from_encoded, optimizer_from_state_dict
from olmo_inspect.formats.state_dict import StateDictFile, read_state_dict_file
from olmo_inspect.model import Checkpoint, CheckpointKind

MODEL_FILES = ("model.safetensors", "model.pt")
OPTIM_FILES = ("optim.safetensors", "optim.pt")
TRAIN_FILES = ("train.pt", "other.pt")


def read(detection: Detection, *, deep: bool = False) -> Checkpoint:
    """Read an unsharded OLMo checkpoint directory as metadata."""
    root = detection.path
    checkpoint = checkpoint_from_detection(detection, CheckpointKind.OLMO_UNSHARDED)

    model = _first_existing(root, MODEL_FILES)
    if model is None:
        checkpoint.problems.append(f"{root}: no model.pt or model.safetensors")
        return checkpoint
    try:
        weights = read_state_dict_file(model, root)
    except InspectError as error:
        # Keep going: the config, trainer state and file list are still worth showing.
        checkpoint.problems.append(str(error))
        weights = None
    if weights is not None:
        add_state_dict(checkpoint, weights)
    if weights is not None and model.suffix == ".safetensors":
        checkpoint.evidence.append(
            f"{model.name} uses OLMo's encoded keys"
            if weights.encoded_keys
            else f"{model.name} uses plain keys"
        )

    optim = _first_existing(root, OPTIM_FILES)
    if optim is not None:
        try:
            optim_file = read_state_dict_file(optim, root)
        except InspectError as error:
            checkpoint.problems.append(str(error))
        else:
            checkpoint.problems += optim_file.problems
            if optim.suffix == ".safetensors":
                checkpoint.optimizer = optimizer_from_encoded(optim_file)
            else:
                checkpoint.optimizer = optimizer_from_state_dict(optim_file, root)

    train = _first_existing(root, TRAIN_FILES)
    if train is not None:
        try:
            checkpoint.train_state, _ = read_train_state(train, root)
        except InspectError as error:
            checkpoint.problems.append(str(error))

    checkpoint.files = list_checkpoint_files(root, _roles(root, model, optim, train))
    for info in checkpoint.files:
        if info.role == "model":
            info.tensors = len(checkpoint.tensors)
        elif info.role == "optim" and checkpoint.optimizer is not None:
            info.tensors = len(checkpoint.optimizer.tensors)
    return checkpoint


def add_state_dict(checkpoint: Checkpoint, weights: StateDictFile) -> None:
    """Append a state-dict file's tensors, problems and unknown pickle globals."""
    checkpoint.tensors += weights.tensors
    checkpoint.problems += weights.problems
    if weights.unknown_globals:
        checkpoint.notes.append(
            f"{weights.path.name} names classes off the allow-list, shown as placeholders: "
            + ", ".join(weights.unknown_globals)
        )


def _first_existing(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def _roles(root: Path, *paths: Path | None) -> dict[str, str]:
    roles = {"config.yaml": "config"}
    for path, role in zip(paths, ("model", "optim", "train"), strict=True):
        if path is not None:
            roles[path.name] = role
    return roles
