"""Target config files of a conversion, and the config checks that decide which targets fit.

Builds Transformers ``config.json`` and ``generation_config.json`` with transformers' own config
classes (imported lazily, inside the functions that need them), OLMo's ``config.yaml`` with
``yaml.safe_dump``, and ``hf_olmo``'s ``config.json``. The ``check_*`` functions return None
when a config fits a target, else one sentence naming the setting that blocks it and what would
work. Reads no tensor data. Only the Transformers config builders import transformers, whose
config classes import torch; ``DeferredConfigFiles`` runs them on a background thread.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from olmo_inspect.convert.olmo_names import OlmoDims, olmo_dims
from olmo_inspect.errors import ConversionError

log = logging.getLogger(__name__)

CONFIG_JSON = "config.json"
CONFIG_YAML = "config.yaml"
GENERATION_CONFIG_JSON = "generation_config.json"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG_JSON = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_JSON = "special_tokens_map.json"

# Files of a Transformers tokenizer that a conversion copies when the source directory has them.
TOKENIZER_FILES = (
    TOKENIZER_JSON,
    TOKENIZER_CONFIG_JSON,
    SPECIAL_TOKENS_MAP_JSON,
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)

# OLMo 1 checkpoints were saved with eos_token_id 0; OLMo's own conversion scripts replace it with
# the end-of-text id of the GPT-NeoX OLMo tokenizer.
OLMO1_BAD_EOS_TOKEN_ID = 0
GPT_NEOX_OLMO_EOS_TOKEN_ID = 50279

# transformers' OlmoLayerNorm has no eps setting: it always uses this value.
OLMO_LAYER_NORM_EPS = 1e-5

HF_OLMO_MODEL_TYPE = "hf_olmo"
HF_OLMO_ARCHITECTURE = "OLMoForCausalLM"

TRANSFORMERS_ARCHITECTURES = {
    "olmo": "OlmoForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "olmo3": "Olmo3ForCausalLM",
    "flex_olmo": "FlexOlmoForCausalLM",
}

SLIDING_ATTENTION = "sliding_attention"
FULL_ATTENTION = "full_attention"

# Fields of OLMo's ModelConfig in the order OLMo writes them, with OLMo's defaults (ai2-olmo
# 0.6.0). A config.yaml built from a Transformers config fills what config.json lacks from here.
OLMO_MODEL_DEFAULTS: dict[str, Any] = {
    "d_model": 768,
    "n_heads": 12,
    "n_kv_heads": None,
    "clip_qkv": None,
    "n_layers": 12,
    "mlp_ratio": 4,
    "mlp_hidden_size": None,
    "activation_type": "swiglu",
    "block_type": "sequential",
    "block_group_size": 1,
    "alibi": False,
    "alibi_bias_max": 8.0,
    "rope": False,
    "rope_full_precision": True,
    "rope_theta": 10000,
    "flash_attention": False,
    "attention_dropout": 0.1,
    "multi_query_attention": None,
    "attention_layer_norm": False,
    "residual_dropout": 0.1,
    "embedding_dropout": 0.1,
    "embedding_layer_norm": False,
    "layer_norm_type": "default",
    "layer_norm_with_affine": True,
    "layer_norm_eps": 1e-5,
    "attention_layer_norm_with_affine": True,
    "max_sequence_length": 1024,
    "include_bias": True,
    "bias_for_layer_norm": None,
    "scale_logits": False,
    "vocab_size": 50257,
    "embedding_size": 50304,
    "weight_tying": True,
    "eos_token_id": 50256,
    "pad_token_id": 50256,
    "init_device": None,
    "init_fn": "normal",
    "init_std": 0.02,
    "init_cutoff_factor": None,
    "precision": None,
    "scale_emb_init": False,
    "emb_init_std": None,
    "norm_after": False,
}

# Fields a config.yaml built from a Transformers config sets although config.json has no value
# for them; they are listed in the plan notes.
OLMO_FIELDS_WITHOUT_SOURCE = (
    "residual_dropout",
    "embedding_dropout",
    "init_device",
    "init_fn",
    "init_cutoff_factor",
    "precision",
    "scale_emb_init",
    "emb_init_std",
)

# Training sections of an OLMo config.yaml that a converted checkpoint has no source for: OLMo's
# defaults, mirroring the layout of the config.yaml files OLMo's trainer writes.
OLMO_TRAINING_SECTIONS: dict[str, Any] = {
    "optimizer": {
        "name": "adamw",
        "learning_rate": 0.0004,
        "weight_decay": 0.1,
        "betas": [0.9, 0.95],
        "eps": 1.0e-08,
    },
    "scheduler": {"name": "cosine_with_warmup", "units": "steps", "t_warmup": 100, "alpha_f": 0.1},
    "data": {"paths": [], "pad_direction": "right", "num_workers": 0, "drop_last": False},
    "save_folder": "checkpoints",
    "max_duration": 1,
    "global_train_batch_size": 512,
    "device_train_microbatch_size": 16,
    "precision": "amp_bf16",
    "sharded_checkpointer": "torch_legacy",
}


@dataclass
class TokenizerFiles:
    """Tokenizer files a conversion copies, and text files it writes for the tokenizer."""

    copy_files: dict[str, Path] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- checks ------------------------------------------------------------------------------------


def check_olmo_for_transformers(model: dict[str, Any]) -> tuple[str | None, str | None]:
    """Pick the Transformers model type for an OLMo trainer ``model`` section.

    Returns ``("olmo", None)`` for the OLMo 1 layout (parameter-free LayerNorm), ``("olmo2",
    None)`` for OLMo 2 (RMSNorm, QK-norm, ``norm_after``), else ``(None, reason)``.
    """
    if not model:
        return (
            None,
            "the config has no model section; OLMo's config.yaml must be next to the weights",
        )

    required: list[tuple[str, Any, Any]] = [
        ("block_type", model.get("block_type", "sequential"), "sequential"),
        ("activation_type", model.get("activation_type", "swiglu"), "swiglu"),
        ("rope", bool(model.get("rope", False)), True),
        ("alibi", bool(model.get("alibi", False)), False),
        ("include_bias", bool(model.get("include_bias", True)), False),
        ("bias_for_layer_norm", bool(model.get("bias_for_layer_norm")), False),
        ("embedding_layer_norm", bool(model.get("embedding_layer_norm", False)), False),
        ("scale_logits", bool(model.get("scale_logits", False)), False),
    ]
    for setting, value, wanted in required:
        if value != wanted:
            return None, (
                f"model.{setting} is {value!r}; Transformers' Olmo and Olmo2 models need "
                f"{setting}: {wanted!r} (convert to hf-olmo instead, which keeps OLMo's own "
                "model code)"
            )

    try:
        dims = olmo_dims(model)
    except (KeyError, TypeError, ValueError) as error:
        return None, f"the model section lacks {error} needed to split att_proj and ff_proj"
    if dims.d_model % dims.n_heads or dims.mlp_hidden_size % 2:
        return (
            None,
            "d_model is not a multiple of n_heads or the ff_proj rows are odd, so they "
            "cannot split",
        )

    qk_norm = bool(model.get("attention_layer_norm", False))
    norm_after = bool(model.get("norm_after", False))
    affine = bool(model.get("layer_norm_with_affine", True))
    norm_type = model.get("layer_norm_type", "default")

    if not qk_norm and not norm_after:
        if affine:
            return None, (
                "model.layer_norm_with_affine is true but Transformers' Olmo uses a parameter-free "
                "LayerNorm and Olmo2 needs attention_layer_norm and norm_after; convert to "
                "hf-olmo instead"
            )
        if norm_type not in ("default", "low_precision"):
            return (
                None,
                f"model.layer_norm_type is {norm_type!r}; Transformers' Olmo uses a LayerNorm "
                "('default')",
            )
        return "olmo", None

    if not (qk_norm and norm_after):
        return None, (
            f"model.attention_layer_norm is {qk_norm} and model.norm_after is {norm_after}; "
            "Transformers' Olmo2 needs both true and Olmo needs both false; convert to "
            "hf-olmo instead"
        )
    if norm_type != "rms":
        return (
            None,
            f"model.layer_norm_type is {norm_type!r}; Transformers' Olmo2 uses RMSNorm ('rms')",
        )
    if not affine or not model.get("attention_layer_norm_with_affine", True):
        return (
            None,
            "Olmo2 needs norm weights: set layer_norm_with_affine and "
            "attention_layer_norm_with_affine",
        )
    if model.get("clip_qkv") is not None:
        return (
            None,
            "model.clip_qkv is set but Transformers' Olmo2 has no clip_qkv; convert to "
            "hf-olmo instead",
        )
    return "olmo2", None


def check_hf_for_olmo(config: dict[str, Any]) -> str | None:
    """Return why a Transformers ``config.json`` has no OLMo trainer form, or None if it has."""
    model_type = config.get("model_type")
    if model_type not in ("olmo", "olmo2"):
        return (
            f"model_type {model_type!r} has no OLMo trainer equivalent; only 'olmo' and 'olmo2' "
            "convert to the OLMo trainer's layout"
        )
    if config.get("attention_bias"):
        return (
            "attention_bias is true but the OLMo trainer layout here has no biases "
            "(include_bias: false)"
        )
    if config.get("hidden_act", "silu") != "silu":
        return f"hidden_act is {config.get('hidden_act')!r}; OLMo's swiglu needs 'silu'"

    rope = rope_parameters(config)
    if rope.get("rope_type", "default") != "default":
        return (
            f"rope type {rope.get('rope_type')!r} has no OLMo trainer setting; only plain "
            "RoPE converts"
        )

    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    head_dim = config.get("head_dim")
    if head_dim is not None and hidden and heads and head_dim != hidden // heads:
        return (
            f"head_dim {head_dim} differs from hidden_size / num_attention_heads, which OLMo "
            "assumes"
        )
    return None


def rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """Return a Transformers config's RoPE settings (``rope_parameters`` or the older fields)."""
    params = config.get("rope_parameters")
    if isinstance(params, dict):
        if FULL_ATTENTION in params and isinstance(params[FULL_ATTENTION], dict):
            return params[FULL_ATTENTION]
        return params

    legacy: dict[str, Any] = {}
    if config.get("rope_theta") is not None:
        legacy["rope_theta"] = config["rope_theta"]
    scaling = config.get("rope_scaling")
    if isinstance(scaling, dict):
        legacy.update(scaling)
        legacy.setdefault("rope_type", scaling.get("type", "default"))
    return legacy


@dataclass
class OlmoCoreLayout:
    """Transformers form of an OLMo-core ``model`` config: model type and config fields."""

    model_type: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    intermediate_size: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    layer_types: list[str] | None = None
    sliding_window: int | None = None
    num_experts: int | None = None
    num_experts_per_tok: int | None = None


def _olmo_core_sliding_windows(mixer: dict[str, Any], n_layers: int) -> list[int]:
    """Return each layer's sliding-window size, -1 for full attention, as OLMo-core assigns them.

    The ``pattern`` repeats over the layers; ``force_full_attention_on_first_layer`` (OLMo-core's
    default True) makes layer 0 full and starts the pattern at layer 1, and
    ``force_full_attention_on_last_layer`` (default True) makes the last layer full.
    """
    window = mixer.get("sliding_window")
    if not window:
        return [-1] * n_layers

    pattern = [int(size) for size in window["pattern"]]
    force_first = window.get("force_full_attention_on_first_layer", True)
    force_last = window.get("force_full_attention_on_last_layer", True)

    sizes: list[int] = []
    for layer in range(n_layers):
        if (force_first and layer == 0) or (force_last and layer == n_layers - 1):
            sizes.append(-1)
            continue
        position = layer - 1 if force_first else layer
        sizes.append(pattern[position % len(pattern)])
    return sizes


def check_olmo_core_for_transformers(
    config: dict[str, Any],
) -> tuple[OlmoCoreLayout | None, str | None]:
    """Derive the Transformers layout of an OLMo-core experiment config, or why there is none.

    Dense ``reordered_norm`` models become ``olmo2``, or ``olmo3`` when any layer uses a sliding
    window (``sliding_window`` is OLMo-core's window plus one, because flash-attention's window
    excludes the current position and Transformers' includes it); ``moe_reordered_norm`` MoE
    models become ``flex_olmo``.
    """
    model = config.get("model")
    if not isinstance(model, dict):
        return (
            None,
            "config.json has no 'model' section (OLMo-core's experiment config); cannot "
            "build config.json",
        )

    if model.get("block_overrides"):
        return (
            None,
            "model.block_overrides is set; per-layer overrides have no Transformers equivalent",
        )
    if model.get("embedding_norm") or model.get("embed_scale") not in (None, 1.0):
        return (
            None,
            "model.embedding_norm / embed_scale is set; Transformers' Olmo models have neither",
        )

    block = model.get("block") or {}
    mixer = block.get("sequence_mixer") or block.get("attention") or {}
    block_name = block.get("name", "default")
    model_name = model.get("name", "default")

    is_moe = block_name == "moe_reordered_norm"
    if block_name not in ("reordered_norm", "moe_reordered_norm"):
        return None, (
            f"model.block.name is {block_name!r}; Transformers' Olmo2/Olmo3/FlexOlmo need "
            "'reordered_norm' (or 'moe_reordered_norm' for MoE)"
        )
    if model_name not in ("default", "moe"):
        return None, f"model.name is {model_name!r}; only 'default' and 'moe' transformers convert"
    if mixer.get("name", "default") != "default":
        return (
            None,
            f"model.block.sequence_mixer.name is {mixer.get('name')!r}; only 'default' "
            "attention converts",
        )

    rope = mixer.get("rope")
    if not rope:
        return (
            None,
            "model.block.sequence_mixer.rope is not set; Transformers' Olmo models need RoPE",
        )
    if rope.get("name", "default") == "complex":
        return None, (
            "model.block.sequence_mixer.rope.name is 'complex' (interleaved rotary), which needs a "
            "q/k row permutation that is not implemented; only 'default' RoPE converts"
        )
    if rope.get("name", "default") != "default":
        return (
            None,
            f"model.block.sequence_mixer.rope.name is {rope.get('name')!r}; only 'default' "
            "converts",
        )
    if rope.get("scaling"):
        return (
            None,
            "model.block.sequence_mixer.rope.scaling is set; RoPE scaling is not converted yet",
        )
    if float(rope.get("partial_rotary_factor", 1.0) or 1.0) != 1.0:
        return (
            None,
            "model.block.sequence_mixer.rope.partial_rotary_factor is not 1.0; partial RoPE "
            "does not convert",
        )

    if mixer.get("use_head_qk_norm"):
        return None, (
            "model.block.sequence_mixer.use_head_qk_norm is true; Transformers' Olmo2/Olmo3 "
            "normalize q and k over all heads, so only use_head_qk_norm: false converts"
        )
    if not mixer.get("qk_norm"):
        return (
            None,
            "model.block.sequence_mixer.qk_norm is not set; Olmo2/Olmo3 need QK-norm weights",
        )
    if mixer.get("clip_qkv") is not None:
        return None, "model.block.sequence_mixer.clip_qkv is set; Olmo2/Olmo3 have no clip_qkv"

    layer_norm = block.get("layer_norm") or {}
    if layer_norm.get("name", "default") != "rms" or layer_norm.get("bias"):
        return None, "model.block.layer_norm must be 'rms' without bias, as Olmo2's RMSNorm"
    lm_head = model.get("lm_head") or {}
    if not lm_head.get("layer_norm") or lm_head.get("bias"):
        return (
            None,
            "model.lm_head needs a layer_norm and no bias (Transformers' model.norm and lm_head)",
        )

    n_layers = int(model["n_layers"])
    d_model = int(model["d_model"])
    n_heads = int(mixer.get("n_heads", 16))
    n_kv_heads = int(mixer.get("n_kv_heads") or n_heads)

    if is_moe:
        moe = block.get("feed_forward_moe") or {}
        if moe.get("shared_mlp"):
            return (
                None,
                "model.block.feed_forward_moe.shared_mlp is set; FlexOlmo has no shared expert",
            )
        if moe.get("name", "default") not in ("default", "dropless"):
            return (
                None,
                f"model.block.feed_forward_moe.name is {moe.get('name')!r}; only 'default' "
                "and 'dropless' convert",
            )
        intermediate_size = int(moe["hidden_size"])
    else:
        feed_forward = block.get("feed_forward") or {}
        if feed_forward.get("bias"):
            return None, "model.block.feed_forward.bias is true; Olmo2's MLP has no biases"
        if feed_forward.get("activation", "silu") != "silu":
            return (
                None,
                f"model.block.feed_forward.activation is {feed_forward.get('activation')!r}; "
                "Olmo2 needs 'silu'",
            )
        intermediate_size = int(feed_forward["hidden_size"])

    layout = OlmoCoreLayout(
        model_type="flex_olmo" if is_moe else "olmo2",
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        vocab_size=int(model["vocab_size"]),
        intermediate_size=intermediate_size,
        rope_theta=float(rope.get("theta", 500000)),
        rms_norm_eps=float(layer_norm.get("eps", 1e-5)),
        tie_word_embeddings=bool(model.get("tie_word_embeddings", False)),
    )

    windows = _olmo_core_sliding_windows(mixer, n_layers)
    sliding = sorted({size for size in windows if size != -1})
    if sliding and is_moe:
        return (
            None,
            "model.block.sequence_mixer.sliding_window is set on an MoE model; FlexOlmo has "
            "no sliding window",
        )
    if len(sliding) > 1:
        return None, f"sliding windows of different sizes {sliding}; Olmo3 allows one window size"
    if sliding:
        layout.model_type = "olmo3"
        layout.sliding_window = sliding[0] + 1
        layout.layer_types = [
            FULL_ATTENTION if size == -1 else SLIDING_ATTENTION for size in windows
        ]

    if is_moe:
        moe = block["feed_forward_moe"]
        layout.num_experts = int(moe["num_experts"])
        # NOTE: the router's normalize_expert_weights is not carried to FlexOlmo's
        # norm_topk_prob (left at its default False), as OLMo-core's own HF export does.
        layout.num_experts_per_tok = int((moe.get("router") or {}).get("top_k", 1))
    return layout, None


# --- Transformers configs ------------------------------------------------------------------------


# transformers' config class of each OLMo-family model type, by defining module.
CONFIG_CLASSES: dict[str, tuple[str, str]] = {
    "olmo": ("transformers.models.olmo.configuration_olmo", "OlmoConfig"),
    "olmo2": ("transformers.models.olmo2.configuration_olmo2", "Olmo2Config"),
    "olmo3": ("transformers.models.olmo3.configuration_olmo3", "Olmo3Config"),
    "flex_olmo": ("transformers.models.flex_olmo.configuration_flex_olmo", "FlexOlmoConfig"),
}


def _config_class(model_type: str) -> Any:
    """Return transformers' config class for an OLMo-family ``model_type``."""
    # Import from the defining modules, not through transformers' lazy top-level module: its
    # attribute lookup is not safe while another thread imports transformers (the config is
    # built on a background thread during conversion).
    import importlib

    module_name, class_name = CONFIG_CLASSES[model_type]
    return getattr(importlib.import_module(module_name), class_name)


def build_transformers_config(model_type: str, fields: dict[str, Any]) -> Any:
    """Build a transformers config object of ``model_type`` with ``fields`` and its architecture.

    ``tie_word_embeddings`` must be among ``fields``: OlmoConfig's default (False) would
    silently untie an OLMo 1 model.
    """
    if "tie_word_embeddings" not in fields:
        raise ValueError("tie_word_embeddings must be set explicitly")
    config_class = _config_class(model_type)
    return config_class(architectures=[TRANSFORMERS_ARCHITECTURES[model_type]], **fields)


def transformers_config_files(config: Any) -> dict[str, str]:
    """Render ``config.json`` and ``generation_config.json`` for a transformers config object."""
    from transformers.generation.configuration_utils import GenerationConfig

    generation = GenerationConfig.from_model_config(config)
    return {
        CONFIG_JSON: config.to_json_string(use_diff=True),
        GENERATION_CONFIG_JSON: generation.to_json_string(use_diff=True),
    }


class DeferredConfigFiles:
    """``config.json`` and ``generation_config.json`` rendered by transformers on a thread.

    Importing transformers' config classes (and torch through them) takes one to three seconds,
    which a conversion that only copies bytes can overlap with its copies. The thread starts in
    the constructor; ``result`` waits for it.
    """

    names = (CONFIG_JSON, GENERATION_CONFIG_JSON)

    def __init__(self, model_type: str, fields: dict[str, Any]) -> None:
        if "tie_word_embeddings" not in fields:
            raise ValueError("tie_word_embeddings must be set explicitly")
        self.model_type = model_type
        self._fields = dict(fields)
        self._files: dict[str, str] | None = None
        self._error: Exception | None = None
        # Not a daemon: interpreter shutdown must not stop the thread inside an import.
        self._thread = threading.Thread(
            target=self._build, name=f"build {model_type} config", daemon=False
        )
        self._thread.start()

    def _build(self) -> None:
        try:
            config = build_transformers_config(self.model_type, self._fields)
            self._files = transformers_config_files(config)
        except Exception as error:  # re-raised by result() on the caller's thread
            self._error = error

    def result(self) -> dict[str, str]:
        """Wait for the thread and return the file texts by file name.

        Raises:
            ConversionError: transformers could not build the config.
        """
        self._thread.join()
        if self._error is not None:
            raise ConversionError(
                f"transformers failed to build the {self.model_type} config.json: "
                f"{self._error}; check that the installed transformers supports {self.model_type}"
            ) from self._error
        assert self._files is not None
        return self._files


def olmo_transformers_fields(
    model: dict[str, Any],
    model_type: str,
    eos_token_id: int | None,
    dtype: str | None,
) -> dict[str, Any]:
    """Return the transformers config fields of an OLMo trainer ``model`` section.

    ``vocab_size`` is the padded ``embedding_size`` (the embedding's rows); ``eos_token_id`` is
    passed in because the caller may have replaced OLMo 1's 0.
    """
    dims: OlmoDims = olmo_dims(model)
    fields: dict[str, Any] = {
        "vocab_size": int(model.get("embedding_size") or model["vocab_size"]),
        "hidden_size": dims.d_model,
        "intermediate_size": dims.mlp_hidden_size // 2,
        "num_hidden_layers": dims.n_layers,
        "num_attention_heads": dims.n_heads,
        "num_key_value_heads": dims.n_kv_heads,
        "max_position_embeddings": int(model.get("max_sequence_length", 2048)),
        "rope_theta": float(model.get("rope_theta", 10000)),
        "pad_token_id": model.get("pad_token_id"),
        "bos_token_id": None,
        "eos_token_id": eos_token_id,
        "tie_word_embeddings": bool(model.get("weight_tying", True)),
        "initializer_range": float(model.get("init_std", 0.02)),
    }
    if model_type == "olmo":
        fields["clip_qkv"] = model.get("clip_qkv")
    else:
        fields["rms_norm_eps"] = float(model.get("layer_norm_eps", 1e-5))
    if dtype is not None:
        fields["dtype"] = dtype
    return fields


def olmo_core_transformers_fields(
    layout: OlmoCoreLayout,
    config: dict[str, Any],
    dtype: str | None,
    notes: list[str],
) -> dict[str, Any]:
    """Return the transformers config fields of an OLMo-core model.

    Token ids come from the experiment's ``dataset.tokenizer`` and ``max_position_embeddings``
    from its sequence length; each that is missing is left to transformers' default with a note.
    """
    tokenizer = (config.get("dataset") or {}).get("tokenizer") or {}
    sequence_length = (config.get("train_module") or {}).get("max_sequence_length") or (
        config.get("dataset") or {}
    ).get("sequence_length")

    fields: dict[str, Any] = {
        "vocab_size": layout.vocab_size,
        "hidden_size": layout.d_model,
        "intermediate_size": layout.intermediate_size,
        "num_hidden_layers": layout.n_layers,
        "num_attention_heads": layout.n_heads,
        "num_key_value_heads": layout.n_kv_heads,
        "rope_theta": layout.rope_theta,
        "rms_norm_eps": layout.rms_norm_eps,
        "tie_word_embeddings": layout.tie_word_embeddings,
        "pad_token_id": tokenizer.get("pad_token_id"),
        "bos_token_id": tokenizer.get("bos_token_id"),
        "eos_token_id": tokenizer.get("eos_token_id"),
        "initializer_range": float((config.get("model") or {}).get("init_std", 0.02)),
    }
    if not tokenizer:
        notes.append(
            "config.json has no dataset.tokenizer section, so pad/eos token ids are unset; "
            "set them in config.json and generation_config.json"
        )
    if sequence_length:
        fields["max_position_embeddings"] = int(sequence_length)
    else:
        notes.append(
            "the experiment config has no sequence length, so max_position_embeddings is "
            "transformers' default; set it to the training context length"
        )
    if layout.layer_types is not None:
        fields["layer_types"] = layout.layer_types
        fields["sliding_window"] = layout.sliding_window
    if layout.num_experts is not None:
        fields["num_experts"] = layout.num_experts
        fields["num_experts_per_tok"] = layout.num_experts_per_tok
    if dtype is not None:
        fields["dtype"] = dtype
    return fields


# --- OLMo trainer and hf_olmo configs ------------------------------------------------------------


def olmo_model_from_transformers(
    config: dict[str, Any], vocab_size: int | None, notes: list[str]
) -> dict[str, Any]:
    """Build an OLMo trainer ``model`` section from a Transformers ``olmo``/``olmo2`` config.

    ``vocab_size`` is the tokenizer's size when known; else the padded ``vocab_size`` of
    config.json is used and a note records it. Fields config.json cannot supply get OLMo's
    defaults and are listed in ``notes``.
    """
    is_olmo2 = config.get("model_type") == "olmo2"
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    intermediate = int(config["intermediate_size"])
    padded_vocab = int(config["vocab_size"])
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
        notes.append(
            f"config.json lists several eos_token_id values {eos}; config.yaml keeps the first"
        )
        eos = eos[0] if eos else None

    model = dict(OLMO_MODEL_DEFAULTS)
    mlp_ratio = (2 * intermediate) // hidden if (2 * intermediate) % hidden == 0 else 4
    model.update(
        {
            "d_model": hidden,
            "n_heads": heads,
            "n_kv_heads": kv_heads if kv_heads != heads else None,
            "clip_qkv": config.get("clip_qkv"),
            "n_layers": int(config["num_hidden_layers"]),
            "mlp_ratio": mlp_ratio,
            "mlp_hidden_size": 2 * intermediate,
            "rope": True,
            "rope_theta": rope_parameters(config).get("rope_theta", 10000),
            "attention_dropout": float(config.get("attention_dropout", 0.0)),
            "multi_query_attention": False,
            "attention_layer_norm": is_olmo2,
            "residual_dropout": 0.0,
            "embedding_dropout": 0.0,
            "layer_norm_type": "rms" if is_olmo2 else "default",
            "layer_norm_with_affine": is_olmo2,
            "layer_norm_eps": float(config.get("rms_norm_eps", OLMO_LAYER_NORM_EPS))
            if is_olmo2
            else OLMO_LAYER_NORM_EPS,
            "max_sequence_length": int(config.get("max_position_embeddings", 2048)),
            "include_bias": False,
            "bias_for_layer_norm": False,
            "vocab_size": vocab_size if vocab_size is not None else padded_vocab,
            "embedding_size": padded_vocab,
            "weight_tying": bool(config.get("tie_word_embeddings", False)),
            "eos_token_id": eos,
            "pad_token_id": config.get("pad_token_id"),
            "init_std": float(config.get("initializer_range", 0.02)),
            "norm_after": is_olmo2,
        }
    )

    if vocab_size is None:
        notes.append(
            f"model.vocab_size is {padded_vocab}, the padded embedding size, because config.json "
            "does not store the tokenizer's size; set it to the tokenizer's vocabulary size "
            "before training"
        )
    defaulted = ", ".join(f"{name}={model[name]!r}" for name in OLMO_FIELDS_WITHOUT_SOURCE)
    notes.append(
        f"config.yaml model fields with no source in config.json use OLMo's defaults: {defaulted}"
    )
    return model


def olmo_config_yaml(
    model: dict[str, Any], tokenizer_identifier: str | None, notes: list[str]
) -> str:
    """Render an OLMo trainer ``config.yaml`` around a ``model`` section.

    The training sections (optimizer, scheduler, data, batch sizes) are OLMo's defaults, which
    ``notes`` records; edit them before training from the converted checkpoint.
    """
    document: dict[str, Any] = {"run_name": "converted", "seed": 6198, "model": model}
    document.update(OLMO_TRAINING_SECTIONS)
    document["tokenizer"] = {
        "identifier": tokenizer_identifier or "allenai/gpt-neox-olmo-dolma-v1_5",
        "truncate_direction": "right",
    }
    if tokenizer_identifier is None:
        notes.append(
            "config.yaml tokenizer.identifier is a placeholder (allenai/gpt-neox-olmo-dolma-v1_5); "
            "set it to the tokenizer the model was trained with"
        )
    notes.append(
        "config.yaml training sections (optimizer, scheduler, data, batch sizes, precision) are "
        "defaults, not the original run's; edit them before training"
    )
    return yaml.safe_dump(document, sort_keys=False)


def olmo_model_fields(section: dict[str, Any]) -> dict[str, Any]:
    """Return the OLMo ``ModelConfig`` fields of a config dict, in OLMo's order."""
    return {name: section[name] for name in OLMO_MODEL_DEFAULTS if name in section}


def hf_olmo_config_json(model: dict[str, Any]) -> str:
    """Render ``hf_olmo``'s ``config.json``: the OLMo model fields plus the hf_olmo markers."""
    import transformers

    document = dict(olmo_model_fields(model))
    document.update(
        {
            "architectures": [HF_OLMO_ARCHITECTURE],
            "model_type": HF_OLMO_MODEL_TYPE,
            "use_cache": True,
            "transformers_version": transformers.__version__,
        }
    )
    return json.dumps(dict(sorted(document.items())), indent=2) + "\n"


# --- tokenizer -----------------------------------------------------------------------------------


def _token_content(tokenizer: dict[str, Any], token_id: int | None) -> str | None:
    """Return the text of ``token_id`` in a ``tokenizers`` JSON document, or None."""
    if token_id is None:
        return None
    for added in tokenizer.get("added_tokens", []):
        if added.get("id") == token_id:
            return str(added.get("content"))
    vocab = (tokenizer.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        for text, index in vocab.items():
            if index == token_id:
                return str(text)
    return None


def tokenizer_vocab_size(path: Path) -> int | None:
    """Return the vocabulary size (highest id + 1) of a ``tokenizers`` JSON file, or None."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.debug("cannot read tokenizer %s: %s", path, error)
        return None
    ids = [added.get("id", -1) for added in document.get("added_tokens", [])]
    vocab = (document.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        ids.extend(vocab.values())
    return max(ids) + 1 if ids else None


def tokenizer_from_json(
    path: Path, tokenizer_class: str, eos_token_id: int | None, pad_token_id: int | None
) -> TokenizerFiles:
    """Plan a Transformers tokenizer from a ``tokenizers`` JSON file such as OLMo's.

    Copies the file as ``tokenizer.json`` and writes ``tokenizer_config.json`` and
    ``special_tokens_map.json`` naming the eos and pad tokens by their text.
    """
    result = TokenizerFiles(copy_files={TOKENIZER_JSON: path})
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        result.notes.append(
            f"tokenizer file {path} could not be read ({error}); it is copied as is"
        )
        return result

    special: dict[str, str] = {}
    eos = _token_content(document, eos_token_id)
    pad = _token_content(document, pad_token_id)
    if eos is not None:
        special["eos_token"] = eos
    if pad is not None:
        special["pad_token"] = pad

    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": tokenizer_class,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "bos_token": None,
        "unk_token": None,
        **special,
    }
    result.files[TOKENIZER_CONFIG_JSON] = json.dumps(tokenizer_config, indent=2) + "\n"
    result.files[SPECIAL_TOKENS_MAP_JSON] = json.dumps(special, indent=2) + "\n"
    return result


def tokenizer_from_directory(directory: Path) -> TokenizerFiles:
    """Plan copying the Transformers tokenizer files found in ``directory``."""
    result = TokenizerFiles()
    for name in TOKENIZER_FILES:
        candidate = directory / name
        if candidate.is_file():
            result.copy_files[name] = candidate
    return result


def resolve_local_file(identifier: str | None, base: Path) -> Path | None:
    """Return the file ``identifier`` names, absolute or relative to ``base``, if it exists."""
    if not identifier:
        return None
    candidate = Path(identifier).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    return candidate if candidate.is_file() else None
