"""Tiny torch modules with the parameter names and registration order of OLMo and OLMo-core.

The forward passes are not the real attention. They only route a gradient to every parameter,
so that one AdamW step fills the optimizer state the way training does. Parameter names, shapes
and the order of ``state_dict()`` follow the upstream model classes (``olmo.model.OLMo`` with
``OLMoSequentialBlock``, ``olmo_core.nn.transformer.Transformer``), which decides the layout of
FSDP flat parameters and of every state dict written from these modules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

LEARNING_RATE = 4e-4
BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.1
MAX_GRAD_NORM = 1.0
SEED = 6198
TRAIN_BATCH = (2, 8)


@dataclass(frozen=True)
class OlmoShape:
    """The model fields of an OLMo trainer config that decide tensor names and shapes."""

    d_model: int
    n_heads: int
    n_kv_heads: int | None
    n_layers: int
    mlp_hidden_size: int
    vocab_size: int
    embedding_size: int
    weight_tying: bool
    parametric_norm: bool
    attention_layer_norm: bool
    norm_after: bool

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_dim(self) -> int:
        return (self.n_kv_heads or self.n_heads) * self.head_dim


OLMO1_SHAPE = OlmoShape(
    d_model=32,
    n_heads=4,
    n_kv_heads=None,
    n_layers=2,
    mlp_hidden_size=256,
    vocab_size=1000,
    embedding_size=1024,
    weight_tying=True,
    parametric_norm=False,
    attention_layer_norm=False,
    norm_after=False,
)

OLMO2_SHAPE = OlmoShape(
    d_model=32,
    n_heads=4,
    n_kv_heads=2,
    n_layers=2,
    mlp_hidden_size=128,
    vocab_size=1000,
    embedding_size=1024,
    weight_tying=False,
    parametric_norm=True,
    attention_layer_norm=True,
    norm_after=True,
)


@dataclass(frozen=True)
class OlmoCoreShape:
    """The OLMo-core ``TransformerConfig`` fields that decide tensor names and shapes."""

    d_model: int = 16
    n_heads: int = 4
    n_kv_heads: int = 2
    n_layers: int = 2
    hidden_size: int = 64
    vocab_size: int = 1024

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim


OLMO_CORE_SHAPE = OlmoCoreShape()


class RMSNorm(nn.Module):
    """An RMS norm with one ``weight`` vector, as OLMo's ``RMSLayerNorm`` with affine weights."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return x * scale * self.weight


class PlainLayerNorm(nn.Module):
    """OLMo's non-parametric LayerNorm: it normalizes and owns no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x, x.shape[-1:])


def _norm(shape: OlmoShape, size: int) -> nn.Module:
    return RMSNorm(size) if shape.parametric_norm else PlainLayerNorm()


class OlmoSequentialBlock(nn.Module):
    """One OLMo ``sequential`` block: fused ``att_proj`` (q|k|v) and ``ff_proj`` (up|gate)."""

    def __init__(self, shape: OlmoShape) -> None:
        super().__init__()
        self.shape = shape

        # OLMoBlock registers the QK norms and the output projections before the subclass
        # adds the fused input projections and the block norms; state_dict() keeps that order.
        if shape.attention_layer_norm:
            self.k_norm = RMSNorm(shape.kv_dim)
            self.q_norm = RMSNorm(shape.d_model)
        self.attn_out = nn.Linear(shape.d_model, shape.d_model, bias=False)
        self.ff_out = nn.Linear(shape.mlp_hidden_size // 2, shape.d_model, bias=False)
        fused_rows = shape.d_model + 2 * shape.kv_dim
        self.att_proj = nn.Linear(shape.d_model, fused_rows, bias=False)
        self.ff_proj = nn.Linear(shape.d_model, shape.mlp_hidden_size, bias=False)
        self.attn_norm = _norm(shape, shape.d_model)
        self.ff_norm = _norm(shape, shape.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = self.shape
        attn_in = x if shape.norm_after else self.attn_norm(x)
        q, k, v = self.att_proj(attn_in).split([shape.d_model, shape.kv_dim, shape.kv_dim], -1)
        if shape.attention_layer_norm:
            q = self.q_norm(q)
            k = self.k_norm(k)
        mixed = q * torch.sigmoid(k.mean(-1, keepdim=True)) + v.mean(-1, keepdim=True)
        attn = self.attn_out(mixed)
        x = x + (self.attn_norm(attn) if shape.norm_after else attn)

        ff_in = x if shape.norm_after else self.ff_norm(x)
        up, gate = self.ff_proj(ff_in).chunk(2, -1)
        ff = self.ff_out(nn.functional.silu(gate) * up)
        return x + (self.ff_norm(ff) if shape.norm_after else ff)


class OlmoTrainerModel(nn.Module):
    """The ``olmo.model.OLMo`` parameter tree: ``transformer.{wte, ln_f, blocks, ff_out}``."""

    def __init__(self, shape: OlmoShape) -> None:
        super().__init__()
        self.shape = shape
        self.transformer = nn.ModuleDict()
        self.transformer["wte"] = nn.Embedding(shape.embedding_size, shape.d_model)
        self.transformer["ln_f"] = _norm(shape, shape.d_model)
        self.transformer["blocks"] = nn.ModuleList(
            OlmoSequentialBlock(shape) for _ in range(shape.n_layers)
        )
        if not shape.weight_tying:
            self.transformer["ff_out"] = nn.Linear(shape.d_model, shape.embedding_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.transformer["wte"](tokens)
        for block in self.transformer["blocks"]:
            x = block(x)
        x = self.transformer["ln_f"](x)
        if self.shape.weight_tying:
            return x @ self.transformer["wte"].weight.t()
        return self.transformer["ff_out"](x)


class OlmoCoreAttention(nn.Module):
    """OLMo-core ``Attention`` with separate q/k/v projections and QK norms."""

    def __init__(self, shape: OlmoCoreShape) -> None:
        super().__init__()
        self.shape = shape
        self.w_q = nn.Linear(shape.d_model, shape.d_model, bias=False)
        self.w_k = nn.Linear(shape.d_model, shape.kv_dim, bias=False)
        self.w_v = nn.Linear(shape.d_model, shape.kv_dim, bias=False)
        self.w_out = nn.Linear(shape.d_model, shape.d_model, bias=False)
        self.q_norm = RMSNorm(shape.d_model)
        self.k_norm = RMSNorm(shape.kv_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q_norm(self.w_q(x))
        k = self.k_norm(self.w_k(x))
        v = self.w_v(x)
        mixed = q * torch.sigmoid(k.mean(-1, keepdim=True)) + v.mean(-1, keepdim=True)
        return self.w_out(mixed)


class OlmoCoreFeedForward(nn.Module):
    """OLMo-core ``FeedForward``: ``w2(silu(w1(x)) * w3(x))``."""

    def __init__(self, shape: OlmoCoreShape) -> None:
        super().__init__()
        self.w1 = nn.Linear(shape.d_model, shape.hidden_size, bias=False)
        self.w2 = nn.Linear(shape.hidden_size, shape.d_model, bias=False)
        self.w3 = nn.Linear(shape.d_model, shape.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


class OlmoCoreBlock(nn.Module):
    """OLMo-core ``ReorderedNormTransformerBlock`` (the norm applies to each sublayer output)."""

    def __init__(self, shape: OlmoCoreShape) -> None:
        super().__init__()
        self.attention = OlmoCoreAttention(shape)
        self.attention_norm = RMSNorm(shape.d_model)
        self.feed_forward = OlmoCoreFeedForward(shape)
        self.feed_forward_norm = RMSNorm(shape.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention_norm(self.attention(x))
        return x + self.feed_forward_norm(self.feed_forward(x))


class OlmoCoreLMHead(nn.Module):
    """OLMo-core ``LMHead`` with its own final norm."""

    def __init__(self, shape: OlmoCoreShape) -> None:
        super().__init__()
        self.norm = RMSNorm(shape.d_model)
        self.w_out = nn.Linear(shape.d_model, shape.vocab_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_out(self.norm(x))


class OlmoCoreModel(nn.Module):
    """The OLMo-core ``Transformer`` parameter tree: ``embeddings``, ``blocks``, ``lm_head``."""

    def __init__(self, shape: OlmoCoreShape) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(shape.vocab_size, shape.d_model)
        self.blocks = nn.ModuleDict({str(i): OlmoCoreBlock(shape) for i in range(shape.n_layers)})
        self.lm_head = OlmoCoreLMHead(shape)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(tokens)
        for block in self.blocks.values():
            x = block(x)
        return self.lm_head(x)


def is_no_decay(name: str) -> bool:
    """Return True for the parameters OLMo keeps out of weight decay: norms and embeddings."""
    parts = name.split(".")
    leaf = parts[-2] if len(parts) >= 2 else name
    return "norm" in leaf or leaf in {"wte", "embeddings", "ln_f"}


def olmo_param_groups(named: list[tuple[str, nn.Parameter]]) -> list[dict[str, object]]:
    """Split parameters into OLMo's decay and no-decay groups, with OLMo's extra group fields.

    ``named`` comes from ``named_parameters()`` of the module passed to the optimizer (with any
    ``module.`` or ``_fsdp_wrapped_module.`` prefixes), so ``param_names`` match upstream.
    """
    decay = sorted((item for item in named if not is_no_decay(item[0])), key=lambda p: p[0])
    no_decay = sorted((item for item in named if is_no_decay(item[0])), key=lambda p: p[0])
    extra = {"sharded": False, "max_grad_norm": MAX_GRAD_NORM, "max_grad_norm_ratio": None}
    groups: list[dict[str, object]] = []
    if decay:
        groups.append(
            {
                "params": [param for _, param in decay],
                "param_names": [name for name, _ in decay],
                **extra,
            }
        )
    if no_decay:
        groups.append(
            {
                "params": [param for _, param in no_decay],
                "param_names": [name for name, _ in no_decay],
                "weight_decay": 0.0,
                **extra,
            }
        )
    return groups


def make_adamw(groups: list[dict[str, object]]) -> torch.optim.AdamW:
    """Create the AdamW optimizer every sample uses (OLMo's defaults)."""
    return torch.optim.AdamW(
        groups, lr=LEARNING_RATE, betas=BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY
    )


def train_one_step(model: nn.Module, optimizer: torch.optim.Optimizer, vocab: int) -> None:
    """Run one forward, backward and optimizer step on a fixed random batch."""
    generator = torch.Generator().manual_seed(SEED)
    tokens = torch.randint(0, vocab, TRAIN_BATCH, generator=generator)
    logits = model(tokens)
    loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def build_olmo_model(shape: OlmoShape, dtype: torch.dtype) -> OlmoTrainerModel:
    """Create a seeded OLMo trainer model in ``dtype``."""
    torch.manual_seed(SEED)
    return OlmoTrainerModel(shape).to(dtype)


def build_olmo_core_model(shape: OlmoCoreShape, dtype: torch.dtype) -> OlmoCoreModel:
    """Create a seeded OLMo-core model in ``dtype``."""
    torch.manual_seed(SEED)
    return OlmoCoreModel(shape).to(dtype)
