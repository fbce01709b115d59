"""Benchmark: open sharded checkpoints with many ranks, ``olmo-inspect PATH --json`` as a process.

Builds (once, in the bench cache) a ``torch_legacy`` checkpoint with N ``rank{N}.pt`` files and
an OLMo ``torch_new`` DCP checkpoint with N ``.distcp`` files, for N in 32, 128 and 256. Tensors
are small but the layout is the real one: each ``rank{N}.pt`` is ``torch.save`` of
``ShardedTensor``s whose metadata names all N ranks (pickled without a process group, with the
``ProcessGroupState`` each rank would record); each ``.distcp`` item is ``torch.save`` of one
chunk and ``.metadata`` is torch's own ``Metadata`` pickled as DCP pickles it. Compares the
median of 5 whole-process runs with a process that only ``torch.load``s one rank file.

Run by hand: ``python bench/sharded_open.py [--ranks 32 128 256] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import io
import pickle
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Measurement, cache_dir, format_table, measure, python_command

TENSORS = 8
ROWS_PER_RANK = 4
COLUMNS = 16
DEFAULT_RANKS = (32, 128, 256)
TARGET_SECONDS = 2.0


def _names() -> list[str]:
    return [f"transformer.blocks.{index}.att_proj.weight" for index in range(TENSORS)]


def _config(checkpointer: str) -> str:
    return f"sharded_checkpointer: {checkpointer}\nmodel:\n  d_model: {COLUMNS}\n"


def _sharded_tensor(name_index: int, rank: int, world_size: int) -> object:
    """Build a ``ShardedTensor`` as FSDP1 would hold it on ``rank``, without a process group."""
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, ShardedTensorMetadata
    from torch.distributed._shard.sharded_tensor.metadata import TensorProperties
    from torch.distributed._shard.sharding_spec import ChunkShardingSpec

    placements = [f"rank:{r}/cpu" for r in range(world_size)]
    shards = [
        ShardMetadata([r * ROWS_PER_RANK, 0], [ROWS_PER_RANK, COLUMNS], placements[r])
        for r in range(world_size)
    ]
    rows = ROWS_PER_RANK * world_size
    metadata = ShardedTensorMetadata(
        shards, torch.Size([rows, COLUMNS]), TensorProperties(dtype=torch.float32)
    )
    spec = ChunkShardingSpec(dim=0, placements=placements)
    tensor = ShardedTensor.__new__(
        ShardedTensor,
        spec,
        rows,
        COLUMNS,
        dtype=torch.float32,
        layout=torch.strided,
        requires_grad=False,
        pin_memory=False,
        memory_format=torch.contiguous_format,
    )
    local = torch.full((ROWS_PER_RANK, COLUMNS), float(name_index * 1000 + rank))
    tensor._metadata = metadata
    tensor._local_shards = [Shard(local, shards[rank])]
    tensor._sharding_spec = spec
    tensor._init_rrefs = False
    tensor._process_group = None
    return tensor


def build_torch_legacy(world_size: int) -> Path:
    """Write (once) a ``torch_legacy`` checkpoint with ``world_size`` rank files."""
    import torch.distributed.distributed_c10d as c10d

    folder = cache_dir() / f"sharded-open-legacy-{world_size}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(_config("torch_legacy"))

    # ShardedTensor.__getstate__ records the rank and world size from torch.distributed. This
    # writer has no process group, so it patches both to return the rank being written.
    saved = (c10d.get_rank, c10d.get_world_size)
    try:
        for rank in range(world_size):
            c10d.get_rank = lambda group=None, rank=rank: rank
            c10d.get_world_size = lambda group=None: world_size
            model = {name: _sharded_tensor(i, rank, world_size) for i, name in enumerate(_names())}
            state = {"model": model, "global_step": 3, "world_size": world_size}
            torch.save(state, folder / f"rank{rank}.pt")
    finally:
        c10d.get_rank, c10d.get_world_size = saved
    (folder / ".complete").write_text("done\n")
    return folder


def build_dcp(world_size: int) -> Path:
    """Write (once) an OLMo ``torch_new`` checkpoint with ``world_size`` ``.distcp`` files."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (
        ChunkStorageMetadata,
        Metadata,
        MetadataIndex,
        StorageMeta,
        TensorProperties,
        TensorStorageMetadata,
    )

    folder = cache_dir() / f"sharded-open-dcp-{world_size}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    dcp_folder = folder / "model_and_optim"
    dcp_folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(_config("torch_new"))

    keys = [f"model.{name}" for name in _names()]
    storage_data = {}
    for rank in range(world_size):
        file = f"__{rank}_0.distcp"
        with (dcp_folder / file).open("wb") as handle:
            for index, key in enumerate(keys):
                buffer = io.BytesIO()
                torch.save(torch.full((ROWS_PER_RANK, COLUMNS), float(index * 1000 + rank)), buffer)
                offset = handle.tell()
                handle.write(buffer.getvalue())
                offsets = (rank * ROWS_PER_RANK, 0)
                storage_data[MetadataIndex(key, offsets, rank)] = _StorageInfo(
                    file, offset, len(buffer.getvalue())
                )

    size = torch.Size([ROWS_PER_RANK * world_size, COLUMNS])
    state_dict_metadata = {
        key: TensorStorageMetadata(
            properties=TensorProperties(dtype=torch.float32),
            size=size,
            chunks=[
                ChunkStorageMetadata(
                    offsets=torch.Size([rank * ROWS_PER_RANK, 0]),
                    sizes=torch.Size([ROWS_PER_RANK, COLUMNS]),
                )
                for rank in range(world_size)
            ],
        )
        for key in keys
    }
    metadata = Metadata(
        state_dict_metadata=state_dict_metadata,
        planner_data={key: ("model", key.removeprefix("model.")) for key in keys},
        storage_data=storage_data,
        storage_meta=StorageMeta(),
    )
    with (dcp_folder / ".metadata").open("wb") as handle:
        pickle.dump(metadata, handle)

    (folder / "train").mkdir()
    for rank in range(world_size):
        torch.save(
            {"global_step": 3, "world_size": world_size}, folder / "train" / f"rank{rank}.pt"
        )
    (folder / ".complete").write_text("done\n")
    return folder


def inspect_command(path: Path) -> list[str]:
    return python_command(
        "import sys; from olmo_inspect.cli import main; "
        f"sys.argv = ['olmo-inspect', {str(path)!r}, '--json']; sys.exit(main())"
    )


def torch_load_command(path: Path) -> list[str]:
    return python_command(
        f"import torch; torch.load({str(path)!r}, map_location='cpu', weights_only=False)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=list(DEFAULT_RANKS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    measurements: list[Measurement] = []
    baseline: Measurement | None = None
    for world_size in args.ranks:
        legacy = build_torch_legacy(world_size)
        dcp_checkpoint = build_dcp(world_size)
        if baseline is None or world_size == max(args.ranks):
            baseline = measure(
                f"torch.load rank0.pt ({world_size} ranks)",
                torch_load_command(legacy / "rank0.pt"),
                args.repeats,
            )
        measurements.append(
            measure(
                f"--json torch_legacy, {world_size} ranks", inspect_command(legacy), args.repeats
            )
        )
        measurements.append(
            measure(
                f"--json torch_new DCP, {world_size} ranks",
                inspect_command(dcp_checkpoint),
                args.repeats,
            )
        )

    assert baseline is not None
    print(format_table([*measurements, baseline], baseline))
    slow = [item.label for item in measurements if item.median_seconds > TARGET_SECONDS]
    print(f"target: under {TARGET_SECONDS} s each; over it: {', '.join(slow) or 'none'}")


if __name__ == "__main__":
    main()
