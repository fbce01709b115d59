"""Detect a checkpoint's kind from its directory listing and config fields, with the evidence.

Only names, sizes and small config files are read here; the format readers do the rest.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_inspect.errors import CheckpointNotFound, CorruptFile, UnsupportedFormat
from olmo_inspect.formats.common import CONFIG_JSON, CONFIG_YAML, read_json_config, read_yaml_config
from olmo_inspect.model import CheckpointKind

log = logging.getLogger(__name__)

# Transformers model types of the OLMo family.
OLMO_MODEL_TYPES = frozenset({"olmo", "olmo2", "olmo3", "olmoe", "flex_olmo", "olmo_hybrid"})
HF_OLMO_MODEL_TYPE = "hf_olmo"

# config.yaml's sharded_checkpointer values and the kind each one writes.
SHARDED_CHECKPOINTERS: dict[str, CheckpointKind] = {
    "torch_legacy": CheckpointKind.OLMO_SHARDED_TORCH_LEGACY,
    "torch_new": CheckpointKind.OLMO_SHARDED_TORCH_NEW,
    "local": CheckpointKind.OLMO_SHARDED_LOCAL,
    "olmo_core": CheckpointKind.OLMO_SHARDED_OLMO_CORE,
}
DEFAULT_SHARDED_CHECKPOINTER = "torch_legacy"

DCP_FOLDER = "model_and_optim"
DCP_METADATA = ".metadata"
LATEST_PREFIX = "latest"
MAX_LATEST_FILE_BYTES = 4096
SINGLE_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

RANK_FILE = re.compile(r"rank(\d+)\.pt$")
STEP_FOLDER = re.compile(r"^step(\d+)(-unsharded)?$")
TRANSFORMERS_WEIGHTS = re.compile(
    r"^(model\.safetensors|model-\d+-of-\d+\.safetensors|pytorch_model\.bin|"
    r"pytorch_model-\d+-of-\d+\.bin|model\.safetensors\.index\.json|pytorch_model\.bin\.index\.json)$"
)


@dataclass
class Detection:
    """The detected kind of ``path``, why, and the config read on the way.

    ``kind`` is None for a run folder (``is_run_folder``) and for a single bare state-dict
    file (``single_file``), whose kind the reader infers from the tensor names.
    """

    path: Path
    kind: CheckpointKind | None
    evidence: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    config_file: str | None = None
    config_text: str | None = None
    is_run_folder: bool = False
    single_file: bool = False


def detect(path: Path) -> Detection:
    """Detect what ``path`` is.

    A ``latest`` symlink resolves to its target; a single ``.pt``/``.bin``/``.safetensors`` file
    is a bare state dict; a folder of ``stepN`` checkpoints is a run folder.

    Raises:
        CheckpointNotFound: the path does not exist or contains no checkpoint of a known kind.
        CorruptFile: a config file that decides the kind cannot be parsed.
    """
    if not path.exists():
        if path.is_symlink():
            raise CheckpointNotFound(f"{path}: the symlink points to a missing {path.readlink()}")
        raise CheckpointNotFound(f"{path}: no such file or directory")

    evidence: list[str] = []
    target = latest_target(path)
    if target is not None:
        evidence.append(f"{path.name} points to {target.name}")
        path = target

    if path.is_file():
        return _detect_file(path, evidence)
    if not path.is_dir():
        raise CheckpointNotFound(f"{path}: neither a regular file nor a directory")

    try:
        names = {entry.name for entry in path.iterdir()}
    except OSError as error:
        raise CheckpointNotFound(f"{path}: cannot list the directory ({error.strerror})") from error
    if not names:
        raise CheckpointNotFound(
            f"{path}: the directory is empty; point olmo-inspect at a checkpoint directory "
            "(config.yaml or config.json with weights)"
        )

    if CONFIG_YAML in names:
        return _detect_olmo_trainer(path, names, evidence)
    if CONFIG_JSON in names:
        return _detect_config_json(path, names, evidence)
    if DCP_METADATA in names and any(name.endswith(".distcp") for name in names):
        evidence.append(f"{DCP_METADATA} and .distcp files without a config: a bare DCP folder")
        return Detection(path, CheckpointKind.OLMO_CORE, evidence)
    if DCP_FOLDER in names and (path / DCP_FOLDER / DCP_METADATA).exists():
        evidence.append(f"{DCP_FOLDER}/{DCP_METADATA} without a config file")
        return Detection(path, CheckpointKind.OLMO_CORE, evidence)
    if _looks_like_run_folder(path, names):
        evidence.append("step folders or latest links: a training run folder")
        return Detection(path, None, evidence, is_run_folder=True)
    if "model.safetensors" in names or "model.pt" in names:
        weights = "model.safetensors" if "model.safetensors" in names else "model.pt"
        evidence.append(f"{weights} without a config: kind inferred from the tensor names")
        return Detection(path / weights, None, evidence, single_file=True)

    shown = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
    raise CheckpointNotFound(
        f"{path}: no checkpoint found (contains {shown}); expected config.yaml (OLMo), "
        "config.json (Transformers, hf_olmo or OLMo-core) with weights, a model_and_optim/ "
        "folder, or step folders of a run"
    )


def _detect_file(path: Path, evidence: list[str]) -> Detection:
    if path.suffix not in SINGLE_FILE_SUFFIXES:
        raise UnsupportedFormat(
            f"{path}: not a checkpoint file; pass a directory, or a .pt, .bin or .safetensors file"
        )
    evidence.append(f"a single {path.suffix} file: kind inferred from the tensor names")
    return Detection(path, None, evidence, single_file=True)


def _detect_olmo_trainer(path: Path, names: set[str], evidence: list[str]) -> Detection:
    config, text = read_yaml_config(path / CONFIG_YAML)
    detection = Detection(
        path, None, evidence, config=config, config_file=CONFIG_YAML, config_text=text
    )
    evidence.append(f"{CONFIG_YAML}: an OLMo trainer config")

    kind = _olmo_layout_kind(path, names, evidence)
    if kind is None:
        raise CheckpointNotFound(
            f"{path}: {CONFIG_YAML} but no weights: expected model.pt or model.safetensors "
            f"(unsharded), rank0.pt (torch_legacy), {DCP_FOLDER}/ (torch_new), "
            "metadata.yaml with model/ (local) or model/metadata.json (olmo_core)"
        )
    detection.kind = kind

    if kind.is_sharded:
        declared = config.get("sharded_checkpointer") or DEFAULT_SHARDED_CHECKPOINTER
        declared_kind = SHARDED_CHECKPOINTERS.get(str(declared))
        if declared_kind != kind:
            detection.notes.append(
                f"{CONFIG_YAML} says sharded_checkpointer: {declared}, but the files are "
                f"{kind}; trusting the files"
            )
    return detection


def _olmo_layout_kind(path: Path, names: set[str], evidence: list[str]) -> CheckpointKind | None:
    rank_files = sorted(name for name in names if RANK_FILE.fullmatch(name))
    if rank_files:
        evidence.append(f"{len(rank_files)} rank*.pt file(s) at the top level: torch_legacy")
        return CheckpointKind.OLMO_SHARDED_TORCH_LEGACY
    if DCP_FOLDER in names:
        evidence.append(f"{DCP_FOLDER}/ (torch.distributed.checkpoint): torch_new")
        return CheckpointKind.OLMO_SHARDED_TORCH_NEW
    if "metadata.yaml" in names and "model" in names:
        evidence.append("metadata.yaml and model/rank*.pt: local")
        return CheckpointKind.OLMO_SHARDED_LOCAL
    if (path / "model" / "metadata.json").exists():
        evidence.append("model/metadata.json with rank_N.safetensors: olmo_core")
        return CheckpointKind.OLMO_SHARDED_OLMO_CORE
    for weights in ("model.pt", "model.safetensors"):
        if weights in names:
            evidence.append(f"{weights}: unsharded")
            return CheckpointKind.OLMO_UNSHARDED
    return None


def _detect_config_json(path: Path, names: set[str], evidence: list[str]) -> Detection:
    config, text = read_json_config(path / CONFIG_JSON)
    detection = Detection(
        path, None, evidence, config=config, config_file=CONFIG_JSON, config_text=text
    )
    model_type = config.get("model_type")

    if model_type == HF_OLMO_MODEL_TYPE:
        evidence.append(f"{CONFIG_JSON} has model_type: {HF_OLMO_MODEL_TYPE}")
        detection.kind = CheckpointKind.HF_OLMO
        return detection

    if model_type is not None:
        if not isinstance(model_type, str):
            raise CorruptFile(f"{path / CONFIG_JSON}: model_type is not a string")
        weights = sorted(name for name in names if TRANSFORMERS_WEIGHTS.match(name))
        if model_type not in OLMO_MODEL_TYPES:
            if not model_type.startswith("olmo"):
                raise UnsupportedFormat(
                    f"{path / CONFIG_JSON}: model_type {model_type!r} is not of the OLMo family "
                    f"({', '.join(sorted(OLMO_MODEL_TYPES))}); olmo-inspect reads OLMo checkpoints"
                )
            detection.notes.append(
                f"model_type {model_type!r} is not a standard Transformers OLMo type; "
                "transformers may not load it"
            )
        evidence.append(f"{CONFIG_JSON} has model_type: {model_type}")
        if weights:
            evidence.append(
                f"weights: {', '.join(weights[:3])}{', ...' if len(weights) > 3 else ''}"
            )
        detection.kind = CheckpointKind.TRANSFORMERS
        return detection

    evidence.append(f"{CONFIG_JSON} without model_type: an OLMo-core experiment config")
    if DCP_FOLDER in names:
        evidence.append(f"{DCP_FOLDER}/ (torch.distributed.checkpoint)")
        detection.kind = CheckpointKind.OLMO_CORE
    elif names & {"model.pt", "model.safetensors", "model"}:
        evidence.append("model.pt, model.safetensors or model/ chunks: OLMo-core unsharded")
        detection.kind = CheckpointKind.OLMO_CORE_UNSHARDED
    else:
        raise CheckpointNotFound(
            f"{path}: {CONFIG_JSON} has no model_type (so not Transformers) and there is no "
            f"{DCP_FOLDER}/ or model.pt/model.safetensors next to it; expected an OLMo-core "
            "checkpoint or a Transformers config with model_type"
        )
    return detection


def latest_target(path: Path) -> Path | None:
    """Return the checkpoint a ``latest`` link names, or None when ``path`` is no such link.

    The OLMo trainer writes ``latest``/``latest-unsharded`` as symlinks. Copies of a run
    sometimes turn them into small text files that contain the target's name, so those count too.
    """
    if path.is_symlink():
        target = path.resolve()
        return target if target.exists() else None
    if not path.name.startswith(LATEST_PREFIX) or not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_LATEST_FILE_BYTES:
            return None
        name = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    target = path.parent / name
    if name and "/" not in name and target.is_dir():
        return target
    return None


def _looks_like_run_folder(path: Path, names: set[str]) -> bool:
    for name in names:
        if STEP_FOLDER.match(name) and (path / name).is_dir():
            return True
        if name.startswith(LATEST_PREFIX) and latest_target(path / name) is not None:
            return True
    return False
