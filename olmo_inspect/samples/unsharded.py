"""Unsharded samples: OLMo trainer (``model.pt`` or encoded ``model.safetensors``), OLMo-core
unsharded output and the ``hf_olmo`` package layout."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from olmo_inspect.model import CheckpointKind
from olmo_inspect.samples.architectures import (
    OLMO1_SHAPE,
    OLMO2_SHAPE,
    OLMO_CORE_SHAPE,
    OlmoShape,
)
from olmo_inspect.samples.configs import (
    olmo_core_experiment_config,
    olmo_model_section,
    olmo_train_config,
    olmo_train_state,
    scalar_fields,
)
from olmo_inspect.samples.encoded_safetensors import write_olmo_encoded_safetensors
from olmo_inspect.samples.sample import Sample, write_json, write_yaml
from olmo_inspect.samples.training import train_olmo, train_olmo_core

log = logging.getLogger(__name__)

CONFIG_YAML = "config.yaml"
CONFIG_JSON = "config.json"
MODEL_PT = "model.pt"
MODEL_SAFETENSORS = "model.safetensors"
OPTIM_PT = "optim.pt"
OPTIM_SAFETENSORS = "optim.safetensors"
TRAIN_PT = "train.pt"
HF_OLMO_WEIGHTS = "pytorch_model.bin"
UNSHARDED_WORLD_SIZE = 2


def write_olmo_unsharded(
    out_dir: Path,
    state_dict: Mapping[str, torch.Tensor],
    config: dict[str, Any],
    *,
    optimizer_state: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    safetensors: bool = False,
) -> dict[str, str]:
    """Write an OLMo unsharded checkpoint the way OLMo's ``FullCheckpointer`` lays it out.

    Writes ``config.yaml``, ``model.pt`` (or ``model.safetensors`` with OLMo-encoded keys when
    ``safetensors`` is set), and ``optim.*`` and ``train.pt`` when given. Returns the stored
    key of each tensor whose key differs from its name (only the encoded format has any).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(out_dir / CONFIG_YAML, config)

    stored_keys: dict[str, str] = {}
    if safetensors:
        stored_keys = write_olmo_encoded_safetensors(out_dir / MODEL_SAFETENSORS, state_dict)
        if optimizer_state is not None:
            write_olmo_encoded_safetensors(out_dir / OPTIM_SAFETENSORS, optimizer_state)
    else:
        torch.save(dict(state_dict), out_dir / MODEL_PT)
        if optimizer_state is not None:
            torch.save(optimizer_state, out_dir / OPTIM_PT)

    if train_state is not None:
        torch.save(train_state, out_dir / TRAIN_PT)
    return stored_keys


def _build_olmo_unsharded(
    name: str, out_dir: Path, dtype: torch.dtype, shape: OlmoShape, safetensors: bool
) -> Sample:
    trained = train_olmo(shape, dtype)
    config = olmo_train_config(shape, run_name=name, save_folder=str(out_dir.parent))
    train_state = olmo_train_state(UNSHARDED_WORLD_SIZE, str(out_dir), unsharded=True)
    stored_keys = write_olmo_unsharded(
        out_dir,
        trained.model,
        config,
        optimizer_state=trained.optimizer,
        train_state=train_state,
        safetensors=safetensors,
    )
    return Sample(
        path=out_dir,
        kind=CheckpointKind.OLMO_UNSHARDED,
        tensors=trained.model,
        stored_keys=stored_keys,
        optimizer_tensors=trained.optimizer_tensors(),
        train_state=scalar_fields(train_state),
        world_size=None,
        config=config,
        name=name,
    )


def build_olmo1_unsharded(out_dir: Path, dtype: torch.dtype) -> Sample:
    """Build an OLMo 1 DDP ``FullCheckpointer`` checkpoint (``model.pt``, ``optim.pt``)."""
    return _build_olmo_unsharded("olmo1-unsharded", out_dir, dtype, OLMO1_SHAPE, False)


def build_olmo2_unsharded_safetensors(out_dir: Path, dtype: torch.dtype) -> Sample:
    """Build an OLMo 2 unsharded checkpoint with OLMo-encoded ``*.safetensors`` files."""
    return _build_olmo_unsharded("olmo2-unsharded-safetensors", out_dir, dtype, OLMO2_SHAPE, True)


def build_olmo_core_unsharded(out_dir: Path, dtype: torch.dtype, with_optim: bool = True) -> Sample:
    """Build OLMo-core's unsharded output: plain-key ``model.safetensors``, ``config.json``.

    ``optim.pt`` (when ``with_optim``) contains torch's unflattened optimizer state dict keyed by
    parameter name: ``{"state": {name: {...}}, "param_groups": [{..., "params": [names]}]}``.
    """
    trained = train_olmo_core(OLMO_CORE_SHAPE, dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = olmo_core_experiment_config(
        OLMO_CORE_SHAPE, run_name="olmo-core-unsharded", save_folder=str(out_dir.parent)
    )
    write_json(out_dir / CONFIG_JSON, config)
    save_file(
        {name: tensor.contiguous() for name, tensor in trained.model.items()},
        str(out_dir / MODEL_SAFETENSORS),
    )

    optimizer_tensors: dict[str, torch.Tensor] = {}
    if with_optim:
        groups = [
            {**fields, "params": [trained.param_names[index] for index in group["params"]]}
            for fields, group in zip(
                trained.group_fields(), trained.optimizer["param_groups"], strict=True
            )
        ]
        torch.save({"state": trained.state_by_name(), "param_groups": groups}, out_dir / OPTIM_PT)
        optimizer_tensors = trained.optimizer_tensors()

    return Sample(
        path=out_dir,
        kind=CheckpointKind.OLMO_CORE_UNSHARDED,
        tensors=trained.model,
        optimizer_tensors=optimizer_tensors,
        config=config,
        name="olmo-core-unsharded",
    )


def hf_olmo_config(shape: OlmoShape) -> dict[str, Any]:
    """Return the ``config.json`` of the ``hf_olmo`` package for an OLMo model section."""
    config = dict(olmo_model_section(shape))
    config.update(
        {
            "architectures": ["OLMoForCausalLM"],
            "model_type": "hf_olmo",
            "use_cache": True,
            "transformers_version": "4.57.6",
        }
    )
    return dict(sorted(config.items()))


def build_hf_olmo(out_dir: Path, dtype: torch.dtype) -> Sample:
    """Build the ``hf_olmo`` layout: ``config.json`` and ``pytorch_model.bin`` (``model.`` keys)."""
    trained = train_olmo(OLMO1_SHAPE, dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = hf_olmo_config(OLMO1_SHAPE)
    write_json(out_dir / CONFIG_JSON, config)

    on_disk = {f"model.{name}": tensor for name, tensor in trained.model.items()}
    torch.save(on_disk, out_dir / HF_OLMO_WEIGHTS)
    return Sample(
        path=out_dir,
        kind=CheckpointKind.HF_OLMO,
        tensors=on_disk,
        config=config,
        name="hf-olmo",
    )
