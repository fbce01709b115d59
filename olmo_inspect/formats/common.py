"""Helpers that several format readers share: configs, trainer state, file listings."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from olmo_inspect.errors import CorruptFile
from olmo_inspect.io.torch_file import TorchFile, read_torch_file
from olmo_inspect.io.unpickler import NumpyArrayRecord, PickledObject, TensorRecord, _NumpyArray
from olmo_inspect.model import Checkpoint, CheckpointKind, FileInfo, TrainState

if TYPE_CHECKING:
    from olmo_inspect.detect import Detection

log = logging.getLogger(__name__)

CONFIG_YAML = "config.yaml"
CONFIG_JSON = "config.json"

# A config file larger than this is not a config; refuse to parse it.
MAX_CONFIG_BYTES = 16 * 1024 * 1024

# Keys of the trainer state dict that hold the step and the tokens seen.
STEP_KEYS = ("global_step", "step")
TOKENS_KEYS = ("global_train_tokens_seen", "tokens_seen")

# How many items of a list field the trainer state shows before eliding the rest.
MAX_LIST_ITEMS = 8


def read_text_file(path: Path) -> str:
    """Return the UTF-8 text of a small config file; raises CorruptFile naming it."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise CorruptFile(f"{path}: {size} bytes is too large for a config file")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CorruptFile(f"{path}: not UTF-8 text ({error.reason})") from error
    except OSError as error:
        raise CorruptFile(f"{path}: cannot read the file ({error.strerror})") from error


def read_yaml_config(path: Path) -> tuple[dict[str, Any], str]:
    """Parse an OLMo ``config.yaml`` with the safe YAML loader; returns (dict, raw text)."""
    text = read_text_file(path)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise CorruptFile(
            f"{path}: invalid YAML{where} ({problem}); fix the file or restore it from the run"
        ) from error
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise CorruptFile(f"{path}: the config is a YAML {type(value).__name__}, not a mapping")
    return value, text


def read_json_config(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a JSON config file; returns (dict, raw text)."""
    text = read_text_file(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CorruptFile(f"{path}: invalid JSON ({error})") from error
    if not isinstance(value, dict):
        raise CorruptFile(f"{path}: the config is a JSON {type(value).__name__}, not an object")
    return value, text


def checkpoint_from_detection(detection: Detection, kind: CheckpointKind) -> Checkpoint:
    """Start a Checkpoint with what the detector found: path, evidence, notes and config."""
    return Checkpoint(
        path=detection.path,
        kind=kind,
        evidence=list(detection.evidence),
        notes=list(detection.notes),
        config=detection.config,
        config_file=detection.config_file,
        config_text=detection.config_text,
    )


def to_json_value(value: Any, depth: int = 0) -> Any:
    """Turn an unpickled value into plain JSON-safe data for display, never including bytes."""
    if depth > 6:
        return "..."
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, TensorRecord):
        return f"<tensor {value.dtype}{list(value.shape)}>"
    if isinstance(value, _NumpyArray):
        record = getattr(value, "record", NumpyArrayRecord())
        return f"<numpy {record.dtype}{list(record.shape)}>"
    if isinstance(value, PickledObject):
        return f"<{value.qualname}>"
    if isinstance(value, dict):
        return {str(key): to_json_value(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [to_json_value(item, depth + 1) for item in value[:MAX_LIST_ITEMS]]
        if len(value) > MAX_LIST_ITEMS:
            items.append(f"... {len(value) - MAX_LIST_ITEMS} more")
        return items
    return f"<{type(value).__name__}>"


def train_state_from_value(value: Any, file: str, skip: Iterable[str] = ()) -> TrainState:
    """Build a TrainState from an unpickled trainer-state dict.

    Scalar fields are kept as they are, and the RNG states are reduced to the names of their
    generators. Keys in ``skip`` (``model``, ``optim`` in torch_legacy rank files) are left out.
    """
    if not isinstance(value, dict):
        raise CorruptFile(f"{file}: the trainer state is a {type(value).__name__}, not a dict")
    skipped = set(skip)
    fields: dict[str, Any] = {}
    for key, item in value.items():
        if key in skipped:
            continue
        if key == "rng" and isinstance(item, dict):
            fields[key] = f"RNG states: {', '.join(str(name) for name in item)}"
            continue
        fields[str(key)] = to_json_value(item)

    step = _first_int(value, STEP_KEYS)
    tokens = _first_int(value, TOKENS_KEYS)
    return TrainState(file=file, step=step, tokens_seen=tokens, fields=fields)


def _first_int(value: dict[Any, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        item = value.get(key)
        if isinstance(item, int) and not isinstance(item, bool):
            return item
    return None


def read_train_state(
    path: Path, root: Path, skip: Iterable[str] = ()
) -> tuple[TrainState, TorchFile]:
    """Read a trainer-state ``.pt`` file (``train.pt``, ``train/rank0.pt``) as metadata."""
    torch_file = read_torch_file(path)
    state = train_state_from_value(torch_file.value, relative_path(path, root), skip)
    return state, torch_file


def relative_path(path: Path, root: Path) -> str:
    """Return ``path`` relative to ``root`` as a POSIX string (its name when outside root)."""
    try:
        return Path(os.path.relpath(path, root)).as_posix() if path != root else path.name
    except ValueError:
        return path.name


def file_info(
    path: Path, root: Path, role: str, rank: int | None = None, tensors: int = 0
) -> FileInfo:
    """Return a FileInfo for ``path``; a missing file is listed with 0 bytes."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return FileInfo(
        path=relative_path(path, root), bytes=size, role=role, rank=rank, tensors=tensors
    )


def list_checkpoint_files(root: Path, roles: dict[str, str]) -> list[FileInfo]:
    """List every regular file under ``root`` with its role from ``roles`` (else 'other')."""
    infos: list[FileInfo] = []
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(directory) / name
            relative = relative_path(path, root)
            infos.append(file_info(path, root, roles.get(relative, "other")))
    infos.sort(key=lambda info: info.path)
    return infos
