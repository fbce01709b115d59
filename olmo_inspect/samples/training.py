"""One real AdamW step on a tiny model, kept as plain state dicts for the writers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from olmo_inspect.samples.architectures import (
    OlmoCoreShape,
    OlmoShape,
    build_olmo_core_model,
    build_olmo_model,
    make_adamw,
    olmo_param_groups,
    train_one_step,
)


@dataclass
class TrainedModel:
    """A model after one optimizer step.

    ``model`` maps unsharded names to tensors. ``optimizer`` is ``optimizer.state_dict()``
    (state keyed by integer id), and ``param_names`` maps each id to its unsharded name.
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    param_names: dict[int, str]

    def state_by_name(self) -> dict[str, dict[str, torch.Tensor]]:
        """Return the per-parameter optimizer state keyed by unsharded name."""
        return {self.param_names[index]: state for index, state in self.optimizer["state"].items()}

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        """Return every optimizer state tensor as ``<param name>.<state key>``."""
        return {
            f"{name}.{key}": value
            for name, state in self.state_by_name().items()
            for key, value in state.items()
        }

    def group_fields(self) -> list[dict[str, Any]]:
        """Return each param group's hyperparameters, without ``params`` and ``param_names``."""
        skipped = {"params", "param_names"}
        return [
            {key: value for key, value in group.items() if key not in skipped}
            for group in self.optimizer["param_groups"]
        ]


def _trained(model: nn.Module, vocab: int, name_prefix: str) -> TrainedModel:
    named = [(name_prefix + name, param) for name, param in model.named_parameters()]
    optimizer = make_adamw(olmo_param_groups(named))
    train_one_step(model, optimizer, vocab)

    state = optimizer.state_dict()
    param_names: dict[int, str] = {}
    for group in state["param_groups"]:
        for index, name in zip(group["params"], group["param_names"], strict=True):
            param_names[index] = name.removeprefix(name_prefix)
    weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    return TrainedModel(model=weights, optimizer=state, param_names=param_names)


def train_olmo(shape: OlmoShape, dtype: torch.dtype, name_prefix: str = "module.") -> TrainedModel:
    """Train an OLMo trainer model one step; ``name_prefix`` is what DDP adds to param names."""
    model = build_olmo_model(shape, dtype)
    return _trained(model, shape.vocab_size, name_prefix)


def train_olmo_core(shape: OlmoCoreShape, dtype: torch.dtype) -> TrainedModel:
    """Train an OLMo-core model one step (no name prefix: FSDP2 keeps plain names)."""
    model = build_olmo_core_model(shape, dtype)
    return _trained(model, shape.vocab_size, "")
