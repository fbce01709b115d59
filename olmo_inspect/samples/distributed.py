"""Run a function on every rank of a gloo process group on 127.0.0.1.

Each rank is a process started by ``torch.multiprocessing.spawn``. The group binds a free port
on 127.0.0.1 only and gives up after ``GROUP_TIMEOUT``; a failing rank raises in the parent.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import warnings
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
GROUP_TIMEOUT = datetime.timedelta(seconds=60)

RankWorker = Callable[[int, int, Any], None]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _rank_main(rank: int, worker: RankWorker, world_size: int, port: int, job: Any) -> None:
    # NOTE: torch warns that ShardedTensor and FSDP1 are deprecated; the samples use them on
    # purpose because the OLMo trainer's checkpointers write their pickles.
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", UserWarning)
    os.environ["MASTER_ADDR"] = LOOPBACK
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{LOOPBACK}:{port}",
        rank=rank,
        world_size=world_size,
        timeout=GROUP_TIMEOUT,
    )
    try:
        worker(rank, world_size, job)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(worker: RankWorker, world_size: int, job: Any) -> None:
    """Call ``worker(rank, world_size, job)`` on ``world_size`` spawned ranks and wait.

    ``worker`` must be a module-level function and ``job`` picklable.
    """
    if world_size < 1:
        raise ValueError(f"invalid world size {world_size}: use 1 or more ranks")
    port = free_port()
    log.debug("spawning %d gloo ranks on %s:%d", world_size, LOOPBACK, port)
    mp.spawn(_rank_main, args=(worker, world_size, port, job), nprocs=world_size, join=True)
