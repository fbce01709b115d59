"""Model facts derived from a checkpoint's config and tensor shapes, with their disagreements.

Config fields are looked up under the names each kind uses (OLMo trainer ``config.yaml``,
Transformers ``config.json``, OLMo-core's experiment config); tensor shapes give the same facts
independently, and every disagreement between the two becomes a sentence in ``mismatches``.
"""

from __future__ import annotations

import re
from typing import Any

from olmo_inspect.model import Checkpoint, CheckpointKind, Summary

BLOCK_INDEX = re.compile(r"(?:^|\.)(?:blocks|layers|h)\.(\d+)\.")

# Embedding tensors by kind family, first match wins.
EMBEDDING_NAMES = (
    "transformer.wte.weight",
    "model.transformer.wte.weight",
    "model.embed_tokens.weight",
    "embeddings.weight",
)
# Output projections whose absence means tied weights.
OUTPUT_NAMES = (
    "transformer.ff_out.weight",
    "model.transformer.ff_out.weight",
    "lm_head.weight",
    "lm_head.w_out.weight",
)


def summarize(checkpoint: Checkpoint) -> Summary:
    """Return the Summary of ``checkpoint``'s model tensors and config."""
    bytes_per_dtype: dict[str, int] = {}
    for tensor in checkpoint.tensors:
        bytes_per_dtype[tensor.dtype] = bytes_per_dtype.get(tensor.dtype, 0) + tensor.nbytes

    summary = Summary(
        parameters=sum(tensor.numel for tensor in checkpoint.tensors),
        bytes=checkpoint.nbytes,
        bytes_per_dtype=bytes_per_dtype,
    )
    config = config_facts(checkpoint)
    shapes = tensor_facts(checkpoint)

    for key in (
        "layers",
        "d_model",
        "n_heads",
        "n_kv_heads",
        "head_dim",
        "mlp_hidden_size",
        "vocab_size",
        "embedding_size",
        "context_length",
        "weight_tying",
        "activation",
        "norm",
    ):
        value = config.get(key)
        if value is None:
            value = shapes.get(key)
        setattr(summary, key, value)
    summary.generation = shapes.get("generation")

    for key, label in (
        ("layers", "layers"),
        ("d_model", "d_model"),
        ("embedding_size", "embedding rows"),
        ("weight_tying", "weight tying"),
    ):
        from_config, from_tensors = config.get(key), shapes.get(key)
        if from_config is not None and from_tensors is not None and from_config != from_tensors:
            summary.mismatches.append(
                f"the config says {label} = {from_config}, the tensors say {from_tensors}"
            )
    return summary


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def config_facts(checkpoint: Checkpoint) -> dict[str, Any]:
    """Return the summary fields the config states, under the names this kind uses."""
    config = checkpoint.config or {}
    kind = checkpoint.kind
    if kind == CheckpointKind.TRANSFORMERS:
        return _transformers_facts(config)
    if kind in (CheckpointKind.OLMO_CORE, CheckpointKind.OLMO_CORE_UNSHARDED):
        return _olmo_core_facts(config)
    return _olmo_trainer_facts(_get(config, "model") if "model" in config else config)


def _olmo_trainer_facts(model: Any) -> dict[str, Any]:
    if not isinstance(model, dict):
        return {}
    d_model = model.get("d_model")
    n_heads = model.get("n_heads")
    n_kv_heads = model.get("n_kv_heads")
    if model.get("multi_query_attention"):
        n_kv_heads = 1
    elif n_kv_heads is None:
        n_kv_heads = n_heads
    hidden = model.get("mlp_hidden_size")
    if hidden is None and d_model and model.get("mlp_ratio"):
        hidden = int(d_model * model["mlp_ratio"])
    if hidden is not None and model.get("activation_type") == "swiglu":
        # OLMo's ff_proj holds up and gate, so the SwiGLU hidden size is half of it.
        hidden //= 2
    vocab = model.get("vocab_size")
    return {
        "layers": model.get("n_layers"),
        "d_model": d_model,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "head_dim": d_model // n_heads if d_model and n_heads else None,
        "mlp_hidden_size": hidden,
        "vocab_size": vocab,
        "embedding_size": model.get("embedding_size") or vocab,
        "context_length": model.get("max_sequence_length"),
        "weight_tying": model.get("weight_tying"),
        "activation": model.get("activation_type"),
        "norm": model.get("layer_norm_type"),
    }


def _transformers_facts(config: dict[str, Any]) -> dict[str, Any]:
    d_model = config.get("hidden_size")
    n_heads = config.get("num_attention_heads")
    return {
        "layers": config.get("num_hidden_layers"),
        "d_model": d_model,
        "n_heads": n_heads,
        "n_kv_heads": config.get("num_key_value_heads") or n_heads,
        "head_dim": config.get("head_dim") or (d_model // n_heads if d_model and n_heads else None),
        "mlp_hidden_size": config.get("intermediate_size"),
        "vocab_size": config.get("vocab_size"),
        "embedding_size": config.get("vocab_size"),
        "context_length": config.get("max_position_embeddings"),
        "weight_tying": config.get("tie_word_embeddings"),
        "activation": config.get("hidden_act"),
        "norm": "rms" if "rms_norm_eps" in config else None,
    }


def _olmo_core_facts(config: dict[str, Any]) -> dict[str, Any]:
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    block = model.get("block") if isinstance(model.get("block"), dict) else {}
    attention = block.get("sequence_mixer") or block.get("attention") or {}
    feed_forward = block.get("feed_forward") or {}
    d_model = model.get("d_model")
    n_heads = _get(attention, "n_heads")
    context = _get(config, "dataset", "sequence_length") or _get(
        config, "data_loader", "sequence_length"
    )
    return {
        "layers": model.get("n_layers"),
        "d_model": d_model,
        "n_heads": n_heads,
        "n_kv_heads": _get(attention, "n_kv_heads") or n_heads,
        "head_dim": d_model // n_heads if d_model and n_heads else None,
        "mlp_hidden_size": _get(feed_forward, "hidden_size"),
        "vocab_size": model.get("vocab_size"),
        "embedding_size": model.get("vocab_size"),
        "context_length": context,
        "weight_tying": None,
        "activation": _get(feed_forward, "activation"),
        "norm": _get(block, "layer_norm", "name"),
    }


def tensor_facts(checkpoint: Checkpoint) -> dict[str, Any]:
    """Return the summary fields that the tensor names and shapes imply."""
    names = {tensor.name: tensor for tensor in checkpoint.tensors}
    facts: dict[str, Any] = {}

    indices = {int(match.group(1)) for name in names if (match := BLOCK_INDEX.search(name))}
    if indices:
        facts["layers"] = max(indices) + 1

    embedding = next((names[name] for name in EMBEDDING_NAMES if name in names), None)
    if embedding is not None and len(embedding.shape) == 2:
        facts["embedding_size"], facts["d_model"] = embedding.shape
        facts["weight_tying"] = not any(name in names for name in OUTPUT_NAMES)

    facts["generation"] = generation(list(names))
    return facts


def generation(names: list[str]) -> str | None:
    """Name the architecture the tensor names indicate."""
    joined = "\n".join(names)
    moe = "experts" in joined
    if "att_proj" in joined:
        if "q_norm" in joined:
            return "OLMo 2 (OLMo trainer, fused att_proj, QK-norm)"
        return "OLMo 1 (OLMo trainer, fused att_proj)"
    if "q_proj" in joined and "transformer." in joined:
        return "OLMo trainer, llama block (separate q/k/v)"
    if ".attention.w_q." in joined:
        return "OLMo-core MoE" if moe else "OLMo-core (separate w_q/w_k/w_v)"
    if "self_attn.q_proj" in joined:
        if moe:
            return "Transformers MoE (OLMoE / FlexOlmo)"
        if "q_norm" in joined:
            return "Transformers OLMo 2/3 (QK-norm)"
        return "Transformers OLMo 1"
    return None
