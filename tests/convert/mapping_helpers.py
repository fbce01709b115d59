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
# Experts per MoE layer in the tiny FlexOlmo models and OLMo-core MoE configs below.
NUM_EXPERTS = 3


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


def moe_config(dropless: bool) -> dict[str, Any]:
    """Return an OLMo-core MoE experiment config matching ``flex_olmo_model``."""
    norm = {"name": "rms", "eps": 1e-6, "bias": False}
    return {
        "model": {
            "name": "moe",
            "d_model": 32,
            "vocab_size": 128,
            "n_layers": 2,
            "tie_word_embeddings": False,
            "block": {
                "name": "moe_reordered_norm",
                "sequence_mixer": {
                    "name": "default",
                    "n_heads": 4,
                    "n_kv_heads": 2,
                    "bias": False,
                    "rope": {"name": "default", "theta": 500000},
                    "qk_norm": norm,
                },
                "layer_norm": norm,
                "feed_forward_moe": {
                    "name": "dropless" if dropless else "default",
                    "num_experts": NUM_EXPERTS,
                    "hidden_size": 48,
                    "router": {"top_k": 2},
                },
            },
            "lm_head": {"layer_norm": norm, "bias": False},
        },
        "dataset": {"tokenizer": {"eos_token_id": 2, "pad_token_id": 1}},
        "train_module": {"max_sequence_length": 64},
    }


def flex_olmo_model(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Save a tiny real FlexOlmo model and return its tensors on disk and config."""
    from transformers import AutoModelForCausalLM, FlexOlmoConfig

    config = FlexOlmoConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=NUM_EXPERTS,
        num_experts_per_tok=2,
        tie_word_embeddings=False,
        pad_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return read_transformers_dir(directory)


def olmo_core_moe_tensors(
    hf: dict[str, torch.Tensor], dropless: bool, three_dimensional: bool
) -> dict[str, torch.Tensor]:
    """Write FlexOlmo weights in OLMo-core's MoE layout, from OLMo-core's forward definitions.

    ``MoEMLP`` computes ``x @ w1[e]`` (so ``w1[e]`` is gate_proj transposed); ``DroplessMoEMLP``
    computes ``x @ w1[e].T`` (``w1[e]`` is gate_proj). Both compute ``h @ w2[e]``.
    """
    names = {
        "model.embed_tokens.weight": "embeddings.weight",
        "model.norm.weight": "lm_head.norm.weight",
        "lm_head.weight": "lm_head.w_out.weight",
    }
    core = {core_name: hf[hf_name] for hf_name, core_name in names.items()}
    per_layer = {
        "self_attn.q_proj.weight": "attention.w_q.weight",
        "self_attn.k_proj.weight": "attention.w_k.weight",
        "self_attn.v_proj.weight": "attention.w_v.weight",
        "self_attn.o_proj.weight": "attention.w_out.weight",
        "self_attn.q_norm.weight": "attention.q_norm.weight",
        "self_attn.k_norm.weight": "attention.k_norm.weight",
        "post_attention_layernorm.weight": "attention_norm.weight",
        "post_feedforward_layernorm.weight": "feed_forward_norm.weight",
    }
    for layer in range(2):
        hf_prefix, core_prefix = f"model.layers.{layer}.", f"blocks.{layer}."
        for hf_name, core_name in per_layer.items():
            core[core_prefix + core_name] = hf[hf_prefix + hf_name]
        core[core_prefix + "feed_forward_moe.router.weight"] = hf[
            hf_prefix + "mlp.gate.weight"
        ].flatten()

        experts = range(NUM_EXPERTS)
        gate = [hf[f"{hf_prefix}mlp.experts.{e}.gate_proj.weight"] for e in experts]
        up = [hf[f"{hf_prefix}mlp.experts.{e}.up_proj.weight"] for e in experts]
        down = [hf[f"{hf_prefix}mlp.experts.{e}.down_proj.weight"] for e in experts]
        if dropless:
            w1, w3 = torch.stack(gate), torch.stack(up)
        else:
            w1 = torch.stack([weight.t() for weight in gate])
            w3 = torch.stack([weight.t() for weight in up])
        w2 = torch.stack([weight.t() for weight in down])
        for name, weight in (("w1", w1), ("w2", w2), ("w3", w3)):
            stored = weight if three_dimensional else weight.reshape(-1, weight.shape[-1])
            core[f"{core_prefix}feed_forward_moe.experts.mlp.{name}"] = stored.contiguous()
    return core
