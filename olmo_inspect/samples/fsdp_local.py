"""OLMo 2 ``LocalShardedCheckpointer`` sample, written by real FSDP1 flat parameters.

Every rank wraps the model with FSDP1 (``use_orig_params=True``, one unit per block, CPU
device) and trains one step on the same batch. It then saves what OLMo's checkpointer saves.
``model/rank{N}.pt`` has the flat-parameter shard and its metadata per FSDP module, and
``optim/rank{N}.pt`` the plain ``optimizer.state_dict()`` of the shard views. Rank 0 also
gathers the full model and optimizer state into a scratch file, which becomes ``Sample.tensors``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from olmo_inspect.model import CheckpointKind
from olmo_inspect.samples.architectures import (
    OLMO2_SHAPE,
    OlmoSequentialBlock,
    build_olmo_model,
    make_adamw,
    olmo_param_groups,
    train_one_step,
)
from olmo_inspect.samples.configs import olmo_train_config, olmo_train_state, scalar_fields
from olmo_inspect.samples.distributed import run_ranks
from olmo_inspect.samples.sample import Sample, write_yaml
from olmo_inspect.samples.sharded import write_train_ranks

log = logging.getLogger(__name__)

FULL_STATE_FILE = "full_state.pt"
# The flat-parameter attributes OLMo's LocalShardedCheckpointer saves, in its order; torch
# <= 2.0.1 had ``_shard_indices`` and ``_shard_param_offsets`` in place of the param infos.
FLAT_PARAM_FIELDS = (
    "_fqns",
    "_numels",
    "_numels_with_padding",
    "_shapes",
    "_shard_numel_padded",
    "_shard_param_infos",
)


@dataclass
class LocalJob:
    """Where the ranks write and where rank 0 leaves the gathered full state."""

    out_dir: Path
    full_state: Path
    dtype: torch.dtype


def _flat_param_state(fsdp_model: Any) -> dict[str, Any]:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    modules = []
    for module_name, module in fsdp_model.named_modules():
        if not isinstance(module, FSDP) or module._handle is None:
            continue
        flat_param = module._handle.flat_param
        handle: dict[str, Any] = {"flat_param.data": flat_param.detach().clone()}
        for field_name in FLAT_PARAM_FIELDS:
            if hasattr(flat_param, field_name):
                handle[f"flat_param.{field_name}"] = getattr(flat_param, field_name)
        modules.append({"handles": [handle], "name": module_name})
    return {"modules": modules}


def _local_rank(rank: int, world_size: int, job: LocalJob) -> None:
    from torch.distributed.fsdp import (
        FullOptimStateDictConfig,
        FullStateDictConfig,
        StateDictType,
    )
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    model = build_olmo_model(OLMO2_SHAPE, job.dtype)
    # NOTE: offload_to_cpu stays off everywhere: FSDP1 on a CPU device crashes with it.
    fsdp_model = FSDP(
        model,
        auto_wrap_policy=ModuleWrapPolicy({OlmoSequentialBlock}),
        use_orig_params=True,
        device_id=torch.device("cpu"),
    )
    optimizer = make_adamw(olmo_param_groups(list(fsdp_model.named_parameters())))
    for group in optimizer.param_groups:
        group["sharded"] = True
    train_one_step(fsdp_model, optimizer, OLMO2_SHAPE.vocab_size)

    torch.save(_flat_param_state(fsdp_model), job.out_dir / "model" / f"rank{rank}.pt")
    torch.save(optimizer.state_dict(), job.out_dir / "optim" / f"rank{rank}.pt")

    full_config = FullStateDictConfig(offload_to_cpu=False, rank0_only=False)
    full_optim_config = FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=False)
    with FSDP.state_dict_type(
        fsdp_model, StateDictType.FULL_STATE_DICT, full_config, full_optim_config
    ):
        full_model = {name: value.clone() for name, value in fsdp_model.state_dict().items()}
        full_optim = FSDP.optim_state_dict(fsdp_model, optimizer)
    if rank == 0:
        torch.save({"model": full_model, "state": full_optim["state"]}, job.full_state)


def build_olmo2_sharded_local(out_dir: Path, dtype: torch.dtype, world_size: int) -> Sample:
    """Build an OLMo 2 ``local`` sharded checkpoint from FSDP1 flat parameters."""
    name = "olmo2-sharded-local"
    for part in ("model", "optim"):
        (out_dir / part).mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="olmo-inspect-sample-") as scratch:
        job = LocalJob(out_dir, Path(scratch) / FULL_STATE_FILE, dtype)
        run_ranks(_local_rank, world_size, job)
        full = torch.load(job.full_state, weights_only=True)

    config = olmo_train_config(
        OLMO2_SHAPE,
        run_name=name,
        save_folder=str(out_dir.parent),
        sharded_checkpointer="local",
        distributed_strategy="fsdp",
    )
    write_yaml(out_dir / "config.yaml", config)
    write_yaml(out_dir / "metadata.yaml", {"world_size": world_size})
    train_state = olmo_train_state(world_size, str(out_dir))
    write_train_ranks(out_dir, train_state, world_size)

    optimizer_tensors = {
        f"{param}.{key}": value
        for param, state in full["state"].items()
        for key, value in state.items()
    }
    return Sample(
        path=out_dir,
        kind=CheckpointKind.OLMO_SHARDED_LOCAL,
        tensors=full["model"],
        optimizer_tensors=optimizer_tensors,
        train_state=scalar_fields(train_state),
        world_size=world_size,
        config=config,
        name=name,
    )
