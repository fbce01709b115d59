"""The record every sample builder returns, and the small file helpers they share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from olmo_inspect.model import CheckpointKind

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class Sample:
    """A checkpoint written by a builder, with what the writer held.

    ``tensors`` are the logical model tensors by unsharded name; ``stored_keys`` maps a name to
    its key on disk only where the two differ. ``optimizer_tensors`` are named
    ``<unsharded param name>.<state key>`` (for example ``transformer.wte.weight.exp_avg``) for
    every kind, whatever the stored keys look like. ``train_state`` contains the scalar trainer
    fields written (``global_step``, ``global_train_tokens_seen``, ...). ``name`` is the
    variant from ``SAMPLE_NAMES`` that built it.
    """

    path: Path
    kind: CheckpointKind
    tensors: dict[str, torch.Tensor]
    stored_keys: dict[str, str] = field(default_factory=dict)
    optimizer_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    train_state: dict[str, Any] | None = None
    world_size: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    name: str = ""


def resolve_dtype(dtype: str) -> torch.dtype:
    """Return the torch dtype called ``dtype``; raises ValueError for an unsupported one."""
    if dtype not in DTYPES:
        raise ValueError(f"invalid sample dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as YAML, keeping key order."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON."""
    path.write_text(json.dumps(data, indent=2) + "\n")


def save_sample_record(sample: Sample, record: Path) -> None:
    """Save ``sample`` (tensors included) to ``record`` so a later process can reload it.

    The path is stored as given; keep the record outside the checkpoint directory so it is
    never mistaken for a checkpoint file.
    """
    torch.save(
        {
            "name": sample.name,
            "path": str(sample.path),
            "kind": sample.kind.value,
            "tensors": sample.tensors,
            "stored_keys": sample.stored_keys,
            "optimizer_tensors": sample.optimizer_tensors,
            "train_state": sample.train_state,
            "world_size": sample.world_size,
            "config_json": json.dumps(sample.config),
        },
        record,
    )


def load_sample_record(record: Path, path: Path) -> Sample:
    """Load a record written by ``save_sample_record``; ``path`` replaces the stored path."""
    data = torch.load(record, weights_only=True)
    return Sample(
        path=path,
        kind=CheckpointKind(data["kind"]),
        tensors=data["tensors"],
        stored_keys=data["stored_keys"],
        optimizer_tensors=data["optimizer_tensors"],
        train_state=data["train_state"],
        world_size=data["world_size"],
        config=json.loads(data["config_json"]),
        name=data["name"],
    )
