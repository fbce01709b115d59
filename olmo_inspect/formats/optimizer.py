"""Optimizer state of unsharded checkpoints: ``optimizer.state_dict()`` saved whole.

torch keys ``state`` by integer parameter id; OLMo adds ``param_names`` to each param group,
with DDP's ``module.`` prefix. Optimizer tensors are named ``<param name>.<state key>``
(``transformer.wte.weight.exp_avg``), or ``<id>.<state key>`` when no name is known.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from olmo_inspect.formats.common import to_json_value
from olmo_inspect.formats.state_dict import StateDictFile
from olmo_inspect.io.torch_file import iter_tensors
from olmo_inspect.model import OptimizerInfo, TensorInfo

DDP_PREFIX = "module."
TORCH_OPTIMIZER_KIND = "torch.optim state_dict"


def strip_ddp_prefix(name: str) -> str:
    return name[len(DDP_PREFIX) :] if name.startswith(DDP_PREFIX) else name


def param_group_summary(group: dict[Any, Any]) -> dict[str, Any]:
    """Return a param group for display: its settings, with params/param_names counted."""
    summary: dict[str, Any] = {}
    for key, value in group.items():
        if key in ("params", "param_names") and isinstance(value, (list, tuple)):
            summary[f"{key}_count"] = len(value)
            continue
        summary[str(key)] = to_json_value(value)
    return summary


def param_names_by_id(groups: list[Any]) -> dict[Any, str]:
    """Map parameter ids to names from each group's ``params`` and ``param_names``."""
    names: dict[Any, str] = {}
    for group in groups:
        if not isinstance(group, dict):
            continue
        params = group.get("params") or []
        param_names = group.get("param_names") or []
        for param_id, name in zip(params, param_names, strict=False):
            names[param_id] = strip_ddp_prefix(str(name))
    return names


def optimizer_from_state_dict(source: StateDictFile, root: Path) -> OptimizerInfo:
    """Build OptimizerInfo from a ``torch.save``d optimizer state dict (``optim.pt``)."""
    value = source.torch_file.value if source.torch_file is not None else {}
    file = source.tensors[0].file if source.tensors else source.path.name
    state = value.get("state", {}) if isinstance(value, dict) else {}
    groups = value.get("param_groups", []) if isinstance(value, dict) else []
    names = param_names_by_id(groups)

    tensors: list[TensorInfo] = []
    state_keys: set[str] = set()
    by_name = {tensor.name: tensor for tensor in source.tensors}
    for param_id, param_state in state.items() if isinstance(state, dict) else []:
        param_name = names.get(param_id, str(param_id))
        for key, _record in iter_tensors(param_state):
            stored = by_name.get(f"state.{param_id}.{key}")
            if stored is None:
                continue
            state_keys.add(key)
            tensors.append(
                TensorInfo(
                    name=f"{param_name}.{key}",
                    shape=stored.shape,
                    dtype=stored.dtype,
                    file=file,
                    stored_key=f"state.{param_id}.{key}",
                    data=stored.data,
                )
            )
    return OptimizerInfo(
        kind=TORCH_OPTIMIZER_KIND,
        param_groups=[param_group_summary(group) for group in groups if isinstance(group, dict)],
        state_keys=sorted(state_keys),
        tensors=tensors,
        files=[file],
    )


def optimizer_from_encoded(source: StateDictFile) -> OptimizerInfo:
    """Build OptimizerInfo from OLMo's encoded ``optim.safetensors``.

    Its keys are paths like ``("state", 3, "exp_avg")`` and ``("param_groups", 0, "lr")``;
    param-group values are small pickles, already decoded into ``source.values``.
    """
    groups: dict[int, dict[str, Any]] = {}
    for path, value in source.values.items():
        # OLMo flattens dicts only, so the param_groups list is usually one pickled value.
        if path == ("param_groups",) and isinstance(value, list):
            for index, group in enumerate(value):
                if isinstance(group, dict):
                    groups.setdefault(index, {}).update(group)
        elif len(path) >= 3 and path[0] == "param_groups" and isinstance(path[1], int):
            groups.setdefault(path[1], {})[".".join(str(part) for part in path[2:])] = value
    for path, tensor in ((t.name.split("."), t) for t in source.tensors):
        if len(path) >= 3 and path[0] == "param_groups" and path[1].isdigit():
            groups.setdefault(int(path[1]), {})[".".join(path[2:])] = (
                f"<tensor {tensor.dtype}{list(tensor.shape)}>"
            )

    ordered_groups = [groups[index] for index in sorted(groups)]
    names = param_names_by_id(
        [
            {"params": g.get("params", []), "param_names": g.get("param_names", [])}
            for g in ordered_groups
        ]
    )
    tensors: list[TensorInfo] = []
    state_keys: set[str] = set()
    for tensor in source.tensors:
        parts = tensor.name.split(".")
        if len(parts) < 3 or parts[0] != "state":
            continue
        param_id: Any = int(parts[1]) if parts[1].isdigit() else parts[1]
        key = ".".join(parts[2:])
        state_keys.add(key)
        tensors.append(
            TensorInfo(
                name=f"{names.get(param_id, parts[1])}.{key}",
                shape=tensor.shape,
                dtype=tensor.dtype,
                file=tensor.file,
                stored_key=tensor.stored_key,
                data=tensor.data,
            )
        )
    return OptimizerInfo(
        kind="OLMo encoded safetensors",
        param_groups=[param_group_summary(group) for group in ordered_groups],
        state_keys=sorted(state_keys),
        tensors=tensors,
        files=[tensors[0].file] if tensors and tensors[0].file else [],
    )
