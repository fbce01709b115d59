"""Transformers samples written by ``save_pretrained`` (or ``torch.save`` for ``.bin`` layouts).

``Sample.tensors`` is what is on disk, read back with the library that reads each file, because
transformers 5 renames MoE weights in memory and writes per-expert names to disk.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from olmo_inspect.model import CheckpointKind
from olmo_inspect.samples.sample import Sample

log = logging.getLogger(__name__)

HIDDEN_SIZE = 32
INTERMEDIATE_SIZE = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
VOCAB = 256
CONTEXT = 64
MOE_EXPERTS = 4
MOE_EXPERTS_PER_TOKEN = 2
SEED = 6198
BIN_SHARDS = 3
BIN_WEIGHTS = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"


def _config(model_type: str) -> Any:
    """Create a tiny transformers config of ``model_type`` (tying set explicitly)."""
    from transformers import Olmo2Config, Olmo3Config, OlmoConfig, OlmoeConfig

    common: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": CONTEXT,
        "pad_token_id": VOCAB - 2,
        "eos_token_id": VOCAB - 1,
        "bos_token_id": None,
    }
    if model_type == "olmo":
        return OlmoConfig(**common, tie_word_embeddings=True)
    if model_type == "olmo2":
        return Olmo2Config(**common, tie_word_embeddings=False)
    if model_type == "olmo3":
        return Olmo3Config(
            **common,
            tie_word_embeddings=False,
            sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],
        )
    if model_type == "olmoe":
        return OlmoeConfig(
            **common,
            tie_word_embeddings=False,
            num_experts=MOE_EXPERTS,
            num_experts_per_tok=MOE_EXPERTS_PER_TOKEN,
        )
    raise ValueError(f"invalid transformers model_type {model_type!r}")


def _model(model_type: str, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(SEED)
    config = _config(model_type)
    return AutoModelForCausalLM.from_config(config).to(dtype)


def read_safetensors_dir(path: Path) -> dict[str, torch.Tensor]:
    """Read every tensor of every ``*.safetensors`` file in ``path`` with ``safe_open``."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
                tensors[key] = handle.get_tensor(key)
    return tensors


def _sample(name: str, out_dir: Path, tensors: dict[str, torch.Tensor]) -> Sample:
    config = json.loads((out_dir / "config.json").read_text())
    return Sample(
        path=out_dir,
        kind=CheckpointKind.TRANSFORMERS,
        tensors=tensors,
        config=config,
        name=name,
    )


def build_transformers(
    name: str, out_dir: Path, dtype: torch.dtype, model_type: str, max_shard_size: str | None = None
) -> Sample:
    """Build a ``save_pretrained`` safetensors checkpoint (sharded with an index when asked)."""
    from transformers.utils import logging as transformers_logging

    model = _model(model_type, dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    bars_were_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        if max_shard_size is None:
            model.save_pretrained(out_dir)
        else:
            model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    finally:
        if bars_were_enabled:
            transformers_logging.enable_progress_bar()
    return _sample(name, out_dir, read_safetensors_dir(out_dir))


def build_transformers_bin(name: str, out_dir: Path, dtype: torch.dtype, shards: int = 1) -> Sample:
    """Build an OLMo 2 checkpoint with ``pytorch_model*.bin`` weights and ``config.json``.

    With ``shards`` > 1 the state dict is split into ``pytorch_model-0000N-of-0000M.bin``
    files in ``state_dict()`` order, plus ``pytorch_model.bin.index.json`` (``weight_map`` and
    ``metadata.total_size`` = the sum of tensor bytes).
    """
    model = _model("olmo2", dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out_dir)
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}

    if shards <= 1:
        torch.save(state, out_dir / BIN_WEIGHTS)
        return _sample(name, out_dir, state)

    keys = list(state)
    per_file = math.ceil(len(keys) / shards)
    weight_map: dict[str, str] = {}
    for index in range(shards):
        file_name = f"pytorch_model-{index + 1:05d}-of-{shards:05d}.bin"
        part = {key: state[key] for key in keys[index * per_file : (index + 1) * per_file]}
        torch.save(part, out_dir / file_name)
        weight_map.update(dict.fromkeys(part, file_name))

    total_size = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    index_doc = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (out_dir / BIN_INDEX).write_text(json.dumps(index_doc, indent=2) + "\n")
    return _sample(name, out_dir, state)
