"""OLMo 2 ``OlmoCoreCheckpointer`` sample: the olmo_core 0.1 sharded layout, written directly.

olmo_core 0.1 is not installed, so this module writes its files with json and safetensors:
``model/metadata.json`` + ``model/rank_{N}.safetensors`` and the same for ``optim/``. Pieces
follow an FSDP1 flat parameter per unit (the root's own parameters, then one per block) split
into ``world_size`` equal ranges. So a tensor may be split across files at any element, or sit
wholly on one rank while another has a ``[0, 0]`` entry. In ``model/`` such an entry is
backed by a shape-``[0]`` tensor; in ``optim/`` the rank had no optimizer state for that
parameter, so its file has no tensor for the entry (both as the upstream files have them).
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from olmo_inspect.model import CheckpointKind
from olmo_inspect.samples.architectures import OLMO2_SHAPE
from olmo_inspect.samples.configs import olmo_train_config, olmo_train_state, scalar_fields
from olmo_inspect.samples.sample import Sample, write_yaml
from olmo_inspect.samples.sharded import BLOCK_NAME, fsdp_param_name, write_train_ranks
from olmo_inspect.samples.training import TrainedModel, train_olmo

log = logging.getLogger(__name__)

SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.uint8: "U8",
}
METADATA_JSON = "metadata.json"
EMPTY_RANGE = (0, 0)


@dataclass(frozen=True)
class FlatPiece:
    """One rank's ``[start, end)`` range of a tensor's flattened elements (``(0, 0)``: none)."""

    start: int
    end: int

    @property
    def empty(self) -> bool:
        return self.end <= self.start


def flat_units(names: list[str]) -> list[list[str]]:
    """Group parameter names into FSDP units: the root's own, then one unit per block."""
    root = [name for name in names if BLOCK_NAME.match(name) is None]
    blocks: dict[str, list[str]] = {}
    for name in names:
        match = BLOCK_NAME.match(name)
        if match is not None:
            blocks.setdefault(match.group(1), []).append(name)
    return [root, *blocks.values()]


def flat_pieces(
    shapes: Mapping[str, tuple[int, ...]], world_size: int
) -> dict[str, list[FlatPiece]]:
    """Return each tensor's piece on every rank when its FSDP unit is split evenly."""
    pieces: dict[str, list[FlatPiece]] = {}
    for unit in flat_units(list(shapes)):
        total = sum(math.prod(shapes[name]) for name in unit)
        shard = math.ceil(total / world_size)
        offset = 0
        for name in unit:
            numel = math.prod(shapes[name])
            per_rank = []
            for rank in range(world_size):
                start = max(offset, rank * shard)
                end = min(offset + numel, (rank + 1) * shard)
                per_rank.append(
                    FlatPiece(start - offset, end - offset)
                    if end > start
                    else FlatPiece(*EMPTY_RANGE)
                )
            pieces[name] = per_rank
            offset += numel
    return pieces


def _spec(start: int, end: int) -> dict[str, Any]:
    return {"flattened_offsets": [[start, end]], "local_shape": None, "global_offset": None}


def _entry(tensor: torch.Tensor, shape: tuple[int, ...], sharded: bool) -> dict[str, Any]:
    return {
        "shape": list(shape),
        "is_sharded": sharded,
        "dtype": SAFETENSORS_DTYPES[tensor.dtype],
        "shard_spec_per_file": {},
    }


def _pickled(value: Any) -> torch.Tensor:
    return torch.frombuffer(bytearray(pickle.dumps(value)), dtype=torch.uint8)


def write_olmo_core_v01_model(
    model_dir: Path, state_dict: Mapping[str, torch.Tensor], world_size: int
) -> dict[str, list[FlatPiece]]:
    """Write ``metadata.json`` and ``rank_{N}.safetensors`` for a model; return the pieces."""
    model_dir.mkdir(parents=True, exist_ok=True)
    pieces = flat_pieces({name: tuple(t.shape) for name, t in state_dict.items()}, world_size)
    metadata: dict[str, Any] = {}
    files: list[dict[str, torch.Tensor]] = [{} for _ in range(world_size)]
    for name, tensor in state_dict.items():
        entry = _entry(tensor, tuple(tensor.shape), sharded=True)
        flat = tensor.reshape(-1)
        for rank, piece in enumerate(pieces[name]):
            entry["shard_spec_per_file"][f"rank_{rank}.safetensors"] = _spec(piece.start, piece.end)
            files[rank][name] = flat[piece.start : piece.end].clone()
        metadata[name] = entry

    for rank, tensors in enumerate(files):
        save_file(tensors, str(model_dir / f"rank_{rank}.safetensors"))
    (model_dir / METADATA_JSON).write_text(json.dumps({"tensors": metadata}))
    return pieces


def write_olmo_core_v01_optim(
    optim_dir: Path, trained: TrainedModel, pieces: dict[str, list[FlatPiece]], world_size: int
) -> None:
    """Write the optimizer state in olmo_core 0.1's flattened layout next to the model's pieces."""
    optim_dir.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, Any] = {}
    files: list[dict[str, torch.Tensor]] = [{} for _ in range(world_size)]

    def put_replicated(key: str, value: torch.Tensor, rank: int) -> None:
        entry = _entry(value, tuple(value.shape), sharded=False)
        stored = value.reshape(1) if value.dim() == 0 else value
        entry["shard_spec_per_file"][f"rank_{rank}.safetensors"] = _spec(0, stored.numel())
        files[rank][key] = stored.clone()
        metadata[key] = entry

    groups = trained.optimizer["param_groups"]
    put_replicated("num_param_groups", torch.tensor(len(groups), dtype=torch.int64), 0)
    for index, (fields, group) in enumerate(zip(trained.group_fields(), groups, strict=True)):
        names = [trained.param_names[param] for param in group["params"]]
        record = {
            "param_names": [fsdp_param_name(name) for name in names],
            **fields,
            "sharded": True,
            "params": list(group["params"]),
            "_param_names": names,
        }
        put_replicated(f"param_group{index}", _pickled(record), 0)

    state_keys: set[str] = set()
    for name, state in trained.state_by_name().items():
        owners = [rank for rank, piece in enumerate(pieces[name]) if not piece.empty]
        for key in sorted(state, key=lambda k: (k != "step", k)):
            value = state[key]
            state_keys.add(key)
            stored_key = f"state.{name}.__{key}"
            if value.dim() == 0:
                put_replicated(stored_key, value, owners[0])
                continue
            entry = _entry(value, tuple(value.shape), sharded=True)
            flat = value.reshape(-1)
            for rank, piece in enumerate(pieces[name]):
                entry["shard_spec_per_file"][f"rank_{rank}.safetensors"] = _spec(
                    piece.start, piece.end
                )
                if not piece.empty:
                    files[rank][stored_key] = flat[piece.start : piece.end].clone()
            metadata[stored_key] = entry

    put_replicated("state_keys", _pickled(sorted(state_keys)), 0)
    for rank, tensors in enumerate(files):
        save_file(tensors, str(optim_dir / f"rank_{rank}.safetensors"))
    (optim_dir / METADATA_JSON).write_text(json.dumps({"tensors": metadata}))


def build_olmo2_sharded_olmo_core(out_dir: Path, dtype: torch.dtype, world_size: int) -> Sample:
    """Build an OLMo 2 checkpoint in olmo_core 0.1's sharded layout."""
    name = "olmo2-sharded-olmo-core"
    trained = train_olmo(OLMO2_SHAPE, dtype)
    pieces = write_olmo_core_v01_model(out_dir / "model", trained.model, world_size)
    write_olmo_core_v01_optim(out_dir / "optim", trained, pieces, world_size)

    config = olmo_train_config(
        OLMO2_SHAPE,
        run_name=name,
        save_folder=str(out_dir.parent),
        sharded_checkpointer="olmo_core",
        distributed_strategy="fsdp",
    )
    write_yaml(out_dir / "config.yaml", config)
    train_state = olmo_train_state(world_size, str(out_dir))
    write_train_ranks(out_dir, train_state, world_size)
    return Sample(
        path=out_dir,
        kind=CheckpointKind.OLMO_SHARDED_OLMO_CORE,
        tensors=trained.model,
        optimizer_tensors=trained.optimizer_tensors(),
        train_state=scalar_fields(train_state),
        world_size=world_size,
        config=config,
        name=name,
    )
