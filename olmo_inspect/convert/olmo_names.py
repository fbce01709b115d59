"""Tensor name tables of the OLMo formats, as data, and their alignment on one canonical name.

The canonical name of a weight is its Transformers OLMo-family name (``model.layers.N.self_attn.
q_proj.weight``, ``lm_head.weight``, ...). Fused OLMo trainer weights map to several canonical
names, each a dim-0 row range of the fused tensor. The conversion mappings and ``diff`` both read
these tables, so a name is spelled in one place only.

Pure functions over names and config dicts: nothing here reads files or imports torch.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from olmo_inspect.model import CheckpointKind

log = logging.getLogger(__name__)

OLMO_PREFIX = "transformer."
HF_OLMO_PREFIX = "model."
DCP_MODEL_PREFIX = "model."

OLMO_TRAINER_KINDS = frozenset(
    {
        CheckpointKind.OLMO_UNSHARDED,
        CheckpointKind.OLMO_SHARDED_TORCH_LEGACY,
        CheckpointKind.OLMO_SHARDED_TORCH_NEW,
        CheckpointKind.OLMO_SHARDED_LOCAL,
        CheckpointKind.OLMO_SHARDED_OLMO_CORE,
    }
)
OLMO_CORE_KINDS = frozenset({CheckpointKind.OLMO_CORE, CheckpointKind.OLMO_CORE_UNSHARDED})

# Rotary buffers that some writers store; they are recomputed from the config on load.
ROTARY_BUFFER_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq", ".inv_freq")

_OLMO_BLOCK = re.compile(r"^transformer\.blocks\.(\d+)\.(.+)$")
_OLMO_CORE_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_HF_EXPERT = re.compile(r"^mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")

# OLMo trainer names outside the blocks -> Transformers names.
OLMO_TOP_LEVEL: dict[str, str] = {
    "transformer.wte.weight": "model.embed_tokens.weight",
    "transformer.ff_out.weight": "lm_head.weight",
    "transformer.ln_f.weight": "model.norm.weight",
}

# OLMo trainer block suffixes that map one to one, for every block layout.
OLMO_BLOCK_ONE_TO_ONE: dict[str, str] = {
    "attn_out.weight": "self_attn.o_proj.weight",
    "ff_out.weight": "mlp.down_proj.weight",
    "q_norm.weight": "self_attn.q_norm.weight",
    "k_norm.weight": "self_attn.k_norm.weight",
}

# Block norms: OLMo 2 (``norm_after``) normalizes the sublayer outputs, as Olmo2's
# post_*_layernorm do; a pre-norm block normalizes the inputs, as Llama-style input_layernorm and
# post_attention_layernorm do.
OLMO_BLOCK_NORMS_AFTER: dict[str, str] = {
    "attn_norm.weight": "post_attention_layernorm.weight",
    "ff_norm.weight": "post_feedforward_layernorm.weight",
}
OLMO_BLOCK_NORMS_BEFORE: dict[str, str] = {
    "attn_norm.weight": "input_layernorm.weight",
    "ff_norm.weight": "post_attention_layernorm.weight",
}

# Fused OLMo trainer block weights: the parts in row order. ``att_proj`` rows are
# [d_model | n_kv_heads*head_dim | n_kv_heads*head_dim] and ``ff_proj`` rows are [up | gate]
# because OLMo's SwiGLU computes ``silu(second_half) * first_half``.
OLMO_FUSED_ATTENTION = "att_proj.weight"
OLMO_FUSED_FEED_FORWARD = "ff_proj.weight"
OLMO_ATTENTION_PARTS = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
)
OLMO_FEED_FORWARD_PARTS = ("mlp.up_proj.weight", "mlp.gate_proj.weight")

# OLMo-core names outside the blocks -> Transformers names.
OLMO_CORE_TOP_LEVEL: dict[str, str] = {
    "embeddings.weight": "model.embed_tokens.weight",
    "lm_head.norm.weight": "model.norm.weight",
    "lm_head.w_out.weight": "lm_head.weight",
}

# OLMo-core block suffixes -> Transformers layer suffixes (``reordered_norm`` blocks, the layout
# of Olmo2, Olmo3 and FlexOlmo).
OLMO_CORE_BLOCK_ONE_TO_ONE: dict[str, str] = {
    "attention.w_q.weight": "self_attn.q_proj.weight",
    "attention.w_k.weight": "self_attn.k_proj.weight",
    "attention.w_v.weight": "self_attn.v_proj.weight",
    "attention.w_out.weight": "self_attn.o_proj.weight",
    "attention.w_q.bias": "self_attn.q_proj.bias",
    "attention.w_k.bias": "self_attn.k_proj.bias",
    "attention.w_v.bias": "self_attn.v_proj.bias",
    "attention.w_out.bias": "self_attn.o_proj.bias",
    "attention.q_norm.weight": "self_attn.q_norm.weight",
    "attention.k_norm.weight": "self_attn.k_norm.weight",
    "attention_norm.weight": "post_attention_layernorm.weight",
    "feed_forward_norm.weight": "post_feedforward_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward_moe.router.weight": "mlp.gate.weight",
}

# OLMo-core MoE expert weights hold every expert in one tensor; each maps to one Transformers
# weight per expert (``mlp.experts.E.<name>``).
OLMO_CORE_EXPERT_WEIGHTS: dict[str, str] = {
    "feed_forward_moe.experts.mlp.w1": "gate_proj.weight",
    "feed_forward_moe.experts.mlp.w2": "down_proj.weight",
    "feed_forward_moe.experts.mlp.w3": "up_proj.weight",
}


@dataclass(frozen=True)
class CanonicalPart:
    """One canonical weight that a stored tensor (or a row range of it) holds.

    ``rows`` is the dim-0 range ``[start, end)`` of the stored tensor, None for all of it.
    ``transposed`` is True when the canonical weight is the transpose of those rows (OLMo-core
    MoE experts of the ``default`` MLP).
    """

    name: str
    rows: tuple[int, int] | None = None
    transposed: bool = False


@dataclass(frozen=True)
class OlmoDims:
    """The sizes of an OLMo trainer model that fix how its fused weights split."""

    d_model: int
    n_heads: int
    n_kv_heads: int
    n_layers: int
    mlp_hidden_size: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def attention_rows(self) -> tuple[int, int, int]:
        """Return the row counts of q, k and v inside ``att_proj``."""
        return (self.d_model, self.kv_dim, self.kv_dim)

    @property
    def feed_forward_rows(self) -> tuple[int, int]:
        """Return the row counts of up and gate inside ``ff_proj``."""
        half = self.mlp_hidden_size // 2
        return (half, half)


def olmo_dims(model_config: dict[str, Any]) -> OlmoDims:
    """Derive the fused-weight sizes from an OLMo trainer ``model`` config section.

    ``n_kv_heads`` is the config's value, else 1 under ``multi_query_attention``, else
    ``n_heads``; the fused ``ff_proj`` has ``mlp_hidden_size`` rows, else
    ``d_model * mlp_ratio``. Raises KeyError or TypeError when a required field is missing.
    """
    d_model = int(model_config["d_model"])
    n_heads = int(model_config["n_heads"])

    if model_config.get("n_kv_heads") is not None:
        n_kv_heads = int(model_config["n_kv_heads"])
    elif model_config.get("multi_query_attention"):
        n_kv_heads = 1
    else:
        n_kv_heads = n_heads

    if model_config.get("mlp_hidden_size") is not None:
        mlp_hidden_size = int(model_config["mlp_hidden_size"])
    else:
        mlp_hidden_size = d_model * int(model_config.get("mlp_ratio", 4))

    return OlmoDims(
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        n_layers=int(model_config["n_layers"]),
        mlp_hidden_size=mlp_hidden_size,
    )


def is_rotary_buffer(name: str) -> bool:
    """Return True for a stored rotary ``inv_freq`` buffer."""
    return name.endswith(ROTARY_BUFFER_SUFFIXES)


def model_section(kind: CheckpointKind, config: dict[str, Any]) -> dict[str, Any]:
    """Return the part of a checkpoint's parsed config that describes the model.

    OLMo trainer ``config.yaml`` and OLMo-core ``config.json`` keep it under ``model``;
    ``hf_olmo`` and Transformers ``config.json`` are the model config themselves.
    """
    if kind in OLMO_TRAINER_KINDS or kind in OLMO_CORE_KINDS:
        section = config.get("model")
        return section if isinstance(section, dict) else {}
    return config


def split_rows(counts: tuple[int, ...]) -> list[tuple[int, int]]:
    """Return the consecutive ``[start, end)`` row ranges of parts with these row counts."""
    ranges: list[tuple[int, int]] = []
    start = 0
    for count in counts:
        ranges.append((start, start + count))
        start += count
    return ranges


def olmo_to_hf(name: str, model_config: dict[str, Any]) -> list[CanonicalPart] | None:
    """Map an OLMo trainer tensor name (``transformer.*``) to its Transformers parts.

    ``model_config`` is the ``model`` section of ``config.yaml``. Returns None for a name the
    tables do not know (a bias, ``wpe``, ``emb_norm``, a ``llama`` block's separate projections).
    """
    if name in OLMO_TOP_LEVEL:
        return [CanonicalPart(OLMO_TOP_LEVEL[name])]

    match = _OLMO_BLOCK.match(name)
    if match is None:
        return None
    layer, suffix = match.group(1), match.group(2)
    prefix = f"model.layers.{layer}."

    if suffix in OLMO_BLOCK_ONE_TO_ONE:
        return [CanonicalPart(prefix + OLMO_BLOCK_ONE_TO_ONE[suffix])]

    norms = OLMO_BLOCK_NORMS_AFTER if model_config.get("norm_after") else OLMO_BLOCK_NORMS_BEFORE
    if suffix in norms:
        return [CanonicalPart(prefix + norms[suffix])]

    if suffix not in (OLMO_FUSED_ATTENTION, OLMO_FUSED_FEED_FORWARD):
        return None

    dims = olmo_dims(model_config)
    if suffix == OLMO_FUSED_ATTENTION:
        parts, counts = OLMO_ATTENTION_PARTS, dims.attention_rows
    else:
        parts, counts = OLMO_FEED_FORWARD_PARTS, dims.feed_forward_rows
    return [
        CanonicalPart(prefix + part, rows)
        for part, rows in zip(parts, split_rows(counts), strict=True)
    ]


def hf_to_olmo(name: str, norm_after: bool) -> tuple[str, int] | None:
    """Map a Transformers ``olmo``/``olmo2`` name to its OLMo trainer name and part index.

    The part index is the position of the weight inside a fused OLMo tensor (q=0, k=1, v=2 in
    ``att_proj``; up=0, gate=1 in ``ff_proj``) and 0 for one-to-one names. Returns None for a
    name with no OLMo trainer equivalent.
    """
    for olmo_name, hf_name in OLMO_TOP_LEVEL.items():
        if name == hf_name:
            return olmo_name, 0

    match = _HF_LAYER.match(name)
    if match is None:
        return None
    layer, suffix = match.group(1), match.group(2)
    prefix = f"transformer.blocks.{layer}."

    if suffix in OLMO_ATTENTION_PARTS:
        return prefix + OLMO_FUSED_ATTENTION, OLMO_ATTENTION_PARTS.index(suffix)
    if suffix in OLMO_FEED_FORWARD_PARTS:
        return prefix + OLMO_FUSED_FEED_FORWARD, OLMO_FEED_FORWARD_PARTS.index(suffix)

    norms = OLMO_BLOCK_NORMS_AFTER if norm_after else OLMO_BLOCK_NORMS_BEFORE
    for table in (OLMO_BLOCK_ONE_TO_ONE, norms):
        for olmo_suffix, hf_suffix in table.items():
            if suffix == hf_suffix:
                return prefix + olmo_suffix, 0
    return None


def olmo_core_expert_layout(model_config: dict[str, Any]) -> tuple[int, int, int, bool]:
    """Return ``(num_experts, d_model, hidden_size, dropless)`` of an OLMo-core MoE config.

    ``dropless`` selects OLMo-core's ``DroplessMoEMLP`` layout (``w1``/``w3`` rows are
    ``[expert][hidden][d_model]``) instead of ``MoEMLP`` (``[expert][d_model][hidden]``); ``w2``
    is ``[expert][hidden][d_model]`` in both. Raises KeyError when the MoE section is missing.
    """
    block = model_config["block"]
    moe = block["feed_forward_moe"]
    dropless = moe.get("name", "default") == "dropless"
    return int(moe["num_experts"]), int(model_config["d_model"]), int(moe["hidden_size"]), dropless


def olmo_core_expert_parts(
    layer: str, weight: str, model_config: dict[str, Any], stored_ndim: int = 2
) -> list[CanonicalPart]:
    """Split one OLMo-core MoE expert tensor into its per-expert Transformers weights.

    ``weight`` is ``w1``, ``w2`` or ``w3``. Older OLMo-core stores each as 2-D
    ``(num_experts * rows_per_expert, columns)``; newer releases store 3-D
    ``(num_experts, rows_per_expert, columns)`` (``stored_ndim=3``), where expert ``e`` is row
    ``e`` of dim 0.
    """
    num_experts, d_model, hidden_size, dropless = olmo_core_expert_layout(model_config)
    hf_weight = OLMO_CORE_EXPERT_WEIGHTS[f"feed_forward_moe.experts.mlp.{weight}"]

    if weight == "w2":
        rows_per_expert, transposed = hidden_size, True
    elif dropless:
        rows_per_expert, transposed = hidden_size, False
    else:
        rows_per_expert, transposed = d_model, True

    if stored_ndim == 3:
        rows_per_expert = 1

    return [
        CanonicalPart(
            f"model.layers.{layer}.mlp.experts.{expert}.{hf_weight}",
            (expert * rows_per_expert, (expert + 1) * rows_per_expert),
            transposed,
        )
        for expert in range(num_experts)
    ]


def olmo_core_to_hf(name: str, model_config: dict[str, Any]) -> list[CanonicalPart] | None:
    """Map an OLMo-core tensor name to its Transformers parts; None for an unknown name.

    A DCP ``model.`` prefix, if still present, is ignored. Expert rows are those of the 2-D
    (flattened) expert layout.
    """
    if name.startswith(DCP_MODEL_PREFIX):
        name = name[len(DCP_MODEL_PREFIX) :]

    if name in OLMO_CORE_TOP_LEVEL:
        return [CanonicalPart(OLMO_CORE_TOP_LEVEL[name])]

    match = _OLMO_CORE_BLOCK.match(name)
    if match is None:
        return None
    layer, suffix = match.group(1), match.group(2)

    if suffix in OLMO_CORE_BLOCK_ONE_TO_ONE:
        return [CanonicalPart(f"model.layers.{layer}.{OLMO_CORE_BLOCK_ONE_TO_ONE[suffix]}")]

    if suffix in OLMO_CORE_EXPERT_WEIGHTS:
        return olmo_core_expert_parts(layer, suffix.rsplit(".", 1)[1], model_config)
    return None


def to_canonical(name: str, kind: CheckpointKind, config: dict[str, Any]) -> list[CanonicalPart]:
    """Align one stored tensor name of any kind on the canonical (Transformers) names.

    ``config`` is the checkpoint's parsed config (``Checkpoint.config``). Returns the parts
    the tensor holds: one part for a renamed weight, several row ranges for a fused OLMo
    weight or an OLMo-core expert tensor, and ``[CanonicalPart(name)]`` unchanged for a name no
    table contains (Transformers names are already canonical), so every tensor has an entry.

    Example: ``to_canonical("transformer.blocks.0.ff_proj.weight", OLMO_UNSHARDED, cfg)`` with
    ``mlp_hidden_size: 256`` returns ``up_proj`` rows ``(0, 128)`` and ``gate_proj`` rows
    ``(128, 256)`` of ``model.layers.0.mlp``.
    """
    section = model_section(kind, config)
    parts: list[CanonicalPart] | None = None

    try:
        if kind in OLMO_TRAINER_KINDS:
            parts = olmo_to_hf(name, section)
        elif kind == CheckpointKind.HF_OLMO and name.startswith(HF_OLMO_PREFIX + OLMO_PREFIX):
            parts = olmo_to_hf(name[len(HF_OLMO_PREFIX) :], section)
        elif kind in OLMO_CORE_KINDS:
            parts = olmo_core_to_hf(name, section)
    except (KeyError, TypeError, ValueError) as error:
        log.debug("config of %s lacks the sizes to align %s: %s", kind, name, error)
        parts = None

    if parts is None:
        return [CanonicalPart(name)]
    return parts
