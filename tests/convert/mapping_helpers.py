"""Shared helpers of the mapping tests: build Checkpoint records and execute mappings with torch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from olmo_inspect.convert.mapping import (
    TRANSFORM_RESHAPE,
    TRANSFORM_TRANSPOSE,
    MappingResult,
    TensorMapping,
)
from olmo_inspect.model import Checkpoint, CheckpointKind, TensorInfo

REPO_ROOT = Path(__file__).resolve().parents[2]


def fixtures_dir() -> Path:
    """Return the upstream reference checkpoints folder (it may be absent)."""
    override = os.environ.get("OLMO_INSPECT_FIXTURES")
    if override:
        return Path(override)
    return (REPO_ROOT / ".." / "shared" / "fixtures").resolve()


def dtype_name(tensor: torch.Tensor) -> str:
    """Return torch's dtype spelling without the ``torch.`` prefix."""
    return str(tensor.dtype).removeprefix("torch.")


def checkpoint_from_tensors(
    path: Path,
    kind: CheckpointKind,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
) -> Checkpoint:
    """Build the metadata record a reader would produce for these tensors."""
    infos = [
        TensorInfo(name, tuple(tensor.shape), dtype_name(tensor), None)
        for name, tensor in tensors.items()
    ]
    return Checkpoint(path=path, kind=kind, tensors=infos, config=config)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file."""
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def read_transformers_dir(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the weights and config.json that ``save_pretrained`` wrote into ``directory``."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(read_safetensors(file))
    config = json.loads((directory / "config.json").read_text())
    return tensors, config


def apply_mapping(mapping: TensorMapping, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Assemble one target tensor as the mapping module documents it."""
    pieces = []
    for source in mapping.sources:
        tensor = tensors[source.name]
        if source.rows is not None:
            tensor = tensor[source.rows[0] : source.rows[1]]
        pieces.append(tensor)
    result = torch.cat(pieces, dim=0)

    if mapping.transform == TRANSFORM_RESHAPE:
        result = result.reshape(mapping.shape)
    elif mapping.transform == TRANSFORM_TRANSPOSE:
        result = result.reshape(mapping.shape[1], mapping.shape[0]).t()
    else:
        assert mapping.transform is None, mapping.transform
    return result.contiguous()


def apply_result(
    result: MappingResult, tensors: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Assemble every target tensor of a plan."""
    return {mapping.target: apply_mapping(mapping, tensors) for mapping in result.mappings}


def meta_model_shapes(config_json: str) -> dict[str, tuple[int, ...]]:
    """Return the parameter names and shapes transformers builds for a config, on the meta device.

    Tied ``lm_head.weight`` is left out, as ``save_pretrained`` leaves it out of the files.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    document = json.loads(config_json)
    config = AutoConfig.for_model(**document)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if document.get("tie_word_embeddings"):
        shapes.pop("lm_head.weight", None)
    return shapes


def saved_model_shapes(config_json: str, directory: Path) -> dict[str, tuple[int, ...]]:
    """Return the tensor names and shapes ``save_pretrained`` writes for a config.

    Used for MoE models, whose names on disk differ from ``state_dict()`` in transformers 5.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**json.loads(config_json))
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tensors, _ = read_transformers_dir(directory)
    return {name: tuple(tensor.shape) for name, tensor in tensors.items()}


def mapping_shapes(result: MappingResult) -> dict[str, tuple[int, ...]]:
    """Return the target names and shapes of a plan."""
    return {mapping.target: mapping.shape for mapping in result.mappings}
