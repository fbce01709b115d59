"""Sharded samples written from a gloo process group: OLMo ``torch_legacy`` rank files and
torch.distributed.checkpoint (DCP) directories as OLMo ``torch_new`` and OLMo-core 3 write them.

The parent trains the model one step and saves the full state to a scratch file. Every rank
memory-maps it and keeps its dim-0 chunk of each tensor, with torch.chunk sizes: ``ceil(rows /
world_size)`` rows per rank, so trailing ranks may get fewer rows or none. ``torch_legacy`` and
``torch_new`` wrap the chunks in ``ShardedTensor``s (``ChunkShardingSpec`` on dim 0) as FSDP1's
``SHARDED_STATE_DICT`` does; OLMo-core wraps them in ``DTensor``s with ``Shard(0)`` as FSDP2
does. Tensors with no dimensions and non-tensor values are replicated on every rank.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from olmo_inspect.model import CheckpointKind
from olmo_inspect.samples.architectures import OLMO1_SHAPE, OLMO_CORE_SHAPE
from olmo_inspect.samples.configs import (
    OLMO_CORE_VERSION,
    olmo_core_experiment_config,
    olmo_core_train_state,
    olmo_train_config,
    olmo_train_state,
    scalar_fields,
)
from olmo_inspect.samples.distributed import run_ranks
from olmo_inspect.samples.sample import Sample, write_json, write_yaml
from olmo_inspect.samples.training import TrainedModel, train_olmo, train_olmo_core

log = logging.getLogger(__name__)

SHARDED_TENSOR = "sharded_tensor"
DTENSOR = "dtensor"
PAYLOAD_FILE = "payload.pt"
DCP_DIR = "model_and_optim"
TRAIN_DIR = "train"
OLMO_CORE_METADATA_JSON = ".metadata.json"
OLMO_CORE_THREADS = 3
DEFAULT_WORLD_SIZE = 2
FSDP_PREFIX = "_fsdp_wrapped_module."
BLOCK_NAME = re.compile(r"^(transformer\.blocks\.\d+)\.(.+)$")


@dataclass
class ShardJob:
    """What every rank needs: the payload to read, where to write and how to wrap chunks."""

    payload: Path
    out_dir: Path
    wrap: str
    layout: str
    thread_count: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def chunk_bounds(rows: int, world_size: int, rank: int) -> tuple[int, int]:
    """Return ``[start, end)`` of ``rank``'s dim-0 chunk with torch.chunk sizes."""
    step = math.ceil(rows / world_size)
    start = min(rank * step, rows)
    return start, min(start + step, rows)


def _to_sharded_tensor(tensor: torch.Tensor, rank: int, world_size: int) -> Any:
    from torch.distributed._shard.sharded_tensor import Shard, init_from_local_shards

    start, end = chunk_bounds(tensor.shape[0], world_size, rank)
    shards = []
    if end > start:
        offsets = [start] + [0] * (tensor.dim() - 1)
        shards.append(Shard.from_tensor_and_offsets(tensor[start:end].clone(), offsets, rank))
    return init_from_local_shards(shards, *tensor.shape)


def _to_dtensor(tensor: torch.Tensor, rank: int, world_size: int, mesh: Any) -> Any:
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor import Shard as ShardPlacement

    start, end = chunk_bounds(tensor.shape[0], world_size, rank)
    local = tensor[start:end].clone()
    return DTensor.from_local(
        local, mesh, [ShardPlacement(0)], shape=tensor.shape, stride=tensor.stride()
    )


def _shard_tree(tree: Any, rank: int, world_size: int, wrap: str, mesh: Any) -> Any:
    if isinstance(tree, dict):
        return {
            key: _shard_tree(value, rank, world_size, wrap, mesh) for key, value in tree.items()
        }
    if isinstance(tree, list):
        return [_shard_tree(value, rank, world_size, wrap, mesh) for value in tree]
    if not isinstance(tree, torch.Tensor):
        return tree
    if tree.dim() == 0:
        return tree.clone()
    if wrap == DTENSOR:
        return _to_dtensor(tree, rank, world_size, mesh)
    return _to_sharded_tensor(tree, rank, world_size)


def _write_rank(rank: int, world_size: int, job: ShardJob) -> None:
    import torch.distributed.checkpoint as dcp

    full = torch.load(job.payload, mmap=True, weights_only=True)
    mesh = None
    if job.wrap == DTENSOR:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (world_size,))
    sharded = _shard_tree(full, rank, world_size, job.wrap, mesh)

    if job.layout == "torch_legacy":
        torch.save({**sharded, **job.extra}, job.out_dir / f"rank{rank}.pt")
        return
    writer = dcp.FileSystemWriter(str(job.out_dir), thread_count=job.thread_count)
    dcp.save(sharded, storage_writer=writer)


def _run_with_payload(tree: dict[str, Any], job: ShardJob, world_size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="olmo-inspect-sample-") as scratch:
        job.payload = Path(scratch) / PAYLOAD_FILE
        torch.save(tree, job.payload)
        run_ranks(_write_rank, world_size, job)


def write_torch_legacy(
    out_dir: Path,
    tree: dict[str, Any],
    world_size: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``rank{N}.pt`` files of ``tree`` (``{"model": ..., "optim": ...}``) with
    ``ShardedTensor``s, plus the ``extra`` top-level keys (the trainer state) in each file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    job = ShardJob(Path(), out_dir, SHARDED_TENSOR, "torch_legacy", extra=extra or {})
    _run_with_payload(tree, job, world_size)


def write_dcp(
    out_dir: Path,
    tree: dict[str, Any],
    world_size: int,
    *,
    wrap: str = DTENSOR,
    thread_count: int = 1,
) -> None:
    """Save ``tree`` with ``torch.distributed.checkpoint`` from ``world_size`` gloo ranks.

    ``wrap`` picks ``ShardedTensor`` (FSDP1) or ``DTensor`` (FSDP2) chunks; ``thread_count``
    is ``FileSystemWriter``'s, so each rank writes up to that many ``__{rank}_{i}.distcp`` files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    job = ShardJob(Path(), out_dir, wrap, "dcp", thread_count=thread_count)
    _run_with_payload(tree, job, world_size)


def fsdp_param_name(name: str) -> str:
    """Return the name FSDP1 (wrapping each block) gives the parameter ``name``."""
    match = BLOCK_NAME.match(name)
    if match is None:
        return FSDP_PREFIX + name
    return f"{FSDP_PREFIX}{match.group(1)}.{FSDP_PREFIX}{match.group(2)}"


def fsdp_optimizer_tree(trained: TrainedModel) -> dict[str, Any]:
    """Return FSDP1's sharded-optimizer layout: state keyed by name, groups naming params."""
    groups = []
    for fields, group in zip(
        trained.group_fields(), trained.optimizer["param_groups"], strict=True
    ):
        names = [trained.param_names[index] for index in group["params"]]
        groups.append(
            {
                "param_names": [fsdp_param_name(name) for name in names],
                **fields,
                "sharded": True,
                "params": names,
            }
        )
    return {"state": trained.state_by_name(), "param_groups": groups}


def write_train_ranks(out_dir: Path, state: dict[str, Any], world_size: int) -> None:
    """Write ``train/rank{N}.pt`` for every rank."""
    train_dir = out_dir / TRAIN_DIR
    train_dir.mkdir(parents=True, exist_ok=True)
    for rank in range(world_size):
        torch.save(state, train_dir / f"rank{rank}.pt")


def build_torch_legacy(out_dir: Path, dtype: torch.dtype, world_size: int) -> Sample:
    """Build an OLMo 1 ``TorchLegacyShardedCheckpointer`` checkpoint (``rank{N}.pt``)."""
    name = "olmo1-sharded-torch-legacy"
    trained = train_olmo(OLMO1_SHAPE, dtype)
    config = olmo_train_config(
        OLMO1_SHAPE,
        run_name=name,
        save_folder=str(out_dir.parent),
        sharded_checkpointer="torch_legacy",
        distributed_strategy="fsdp",
    )
    train_state = olmo_train_state(world_size, str(out_dir))
    tree = {"model": trained.model, "optim": fsdp_optimizer_tree(trained)}
    write_torch_legacy(out_dir, tree, world_size, extra=train_state)
    write_yaml(out_dir / "config.yaml", config)
    return Sample(
        path=out_dir,
        kind=CheckpointKind.OLMO_SHARDED_TORCH_LEGACY,
        tensors=trained.model,
        optimizer_tensors=trained.optimizer_tensors(),
        train_state=scalar_fields(train_state),
        world_size=world_size,
        config=config,
        name=name,
    )


def build_torch_new(out_dir: Path, dtype: torch.dtype, world_size: int) -> Sample:
    """Build an OLMo 1 ``TorchNewStyleShardedCheckpointer`` checkpoint (DCP, one file a rank)."""
    name = "olmo1-sharded-torch-new"
    trained = train_olmo(OLMO1_SHAPE, dtype)
    config = olmo_train_config(
        OLMO1_SHAPE,
        run_name=name,
        save_folder=str(out_dir.parent),
        sharded_checkpointer="torch_new",
        distributed_strategy="fsdp",
    )
    tree = {"model": trained.model, "optim": fsdp_optimizer_tree(trained)}
    write_dcp(out_dir / DCP_DIR, tree, world_size, wrap=SHARDED_TENSOR)
    train_state = olmo_train_state(world_size, str(out_dir))
    write_train_ranks(out_dir, train_state, world_size)
    write_yaml(out_dir / "config.yaml", config)
    return Sample(
        path=out_dir,
        kind=CheckpointKind.OLMO_SHARDED_TORCH_NEW,
        tensors=trained.model,
        stored_keys={key: f"model.{key}" for key in trained.model},
        optimizer_tensors=trained.optimizer_tensors(),
        train_state=scalar_fields(train_state),
        world_size=world_size,
        config=config,
        name=name,
    )


def flat_optimizer_tree(trained: TrainedModel, initial_lr: float) -> dict[str, Any]:
    """Return torch's flattened optimizer state dict, as OLMo-core saves it.

    Keys are ``state.<name>.<key>`` and ``param_groups.<name>.<field>`` (each parameter
    repeats its group's fields), as ``get_optimizer_state_dict`` with
    ``flatten_optimizer_state_dict=True`` returns them.
    """
    flat: dict[str, Any] = {}
    for name, state in trained.state_by_name().items():
        for key, value in state.items():
            flat[f"state.{name}.{key}"] = value
    for fields, group in zip(
        trained.group_fields(), trained.optimizer["param_groups"], strict=True
    ):
        olmo_core_fields = {
            key: value
            for key, value in fields.items()
            if key not in {"sharded", "max_grad_norm", "max_grad_norm_ratio"}
        }
        olmo_core_fields["initial_lr"] = initial_lr
        for index in group["params"]:
            name = trained.param_names[index]
            for key, value in sorted(olmo_core_fields.items()):
                flat[f"param_groups.{name}.{key}"] = value
    return flat


def build_olmo_core_dcp(out_dir: Path, dtype: torch.dtype, world_size: int) -> Sample:
    """Build an OLMo-core 3 step directory: DCP with several files per rank, ``config.json``,
    ``.metadata.json`` and ``train/rank{N}.pt``."""
    name = "olmo-core-dcp"
    trained = train_olmo_core(OLMO_CORE_SHAPE, dtype)
    lr = trained.group_fields()[0]["lr"]
    tree = {"model": trained.model, "optim": flat_optimizer_tree(trained, initial_lr=lr)}
    write_dcp(out_dir / DCP_DIR, tree, world_size, wrap=DTENSOR, thread_count=OLMO_CORE_THREADS)

    config = olmo_core_experiment_config(
        OLMO_CORE_SHAPE, run_name=name, save_folder=str(out_dir.parent)
    )
    write_json(out_dir / "config.json", config)
    write_json(
        out_dir / OLMO_CORE_METADATA_JSON, {"ephemeral": False, "version": OLMO_CORE_VERSION}
    )
    train_state = olmo_core_train_state(world_size)
    write_train_ranks(out_dir, train_state, world_size)
    return Sample(
        path=out_dir,
        kind=CheckpointKind.OLMO_CORE,
        tensors=trained.model,
        stored_keys={key: f"model.{key}" for key in trained.model},
        optimizer_tensors=trained.optimizer_tensors(),
        train_state=scalar_fields(train_state),
        world_size=world_size,
        config=config,
        name=name,
    )
