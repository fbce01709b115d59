"""Small real checkpoints of every kind olmo-inspect reads, written by the real libraries.

Tests, the ``olmo-inspect demo`` command and benchmarks build their inputs here. Every builder
trains a tiny model one AdamW step, writes the layout the upstream trainer or library writes and
returns a ``Sample`` with the tensors it wrote. This package imports torch; the inspect path
never imports it.

>>> sample = build_sample("olmo1-unsharded", Path("/tmp/olmo1"))  # doctest: +SKIP
>>> sorted(sample.tensors)[0]  # doctest: +SKIP
'transformer.blocks.0.att_proj.weight'

Optimizer tensors are named ``<unsharded param name>.<state key>`` for every kind, whatever the
stored keys are:

- OLMo unsharded ``optim.pt`` / ``optim.safetensors``: state keyed by integer id, with names in
  ``param_groups[i]["param_names"]`` (carrying DDP's ``module.`` prefix).
- ``torch_legacy``: state keyed by name. DCP: ``optim.state.<name>.<key>``.
- ``local``: state keyed by integer id per rank, ids of params not in the shard missing.
- olmo_core 0.1: ``state.<name>.__<key>``. OLMo-core unsharded ``optim.pt``: keyed by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from olmo_inspect.samples.encoded_safetensors import encode_key, write_olmo_encoded_safetensors
from olmo_inspect.samples.olmo_core_v01 import (
    write_olmo_core_v01_model,
    write_olmo_core_v01_optim,
)
from olmo_inspect.samples.sample import DTYPES, Sample, resolve_dtype
from olmo_inspect.samples.sharded import DEFAULT_WORLD_SIZE, write_dcp, write_torch_legacy
from olmo_inspect.samples.unsharded import write_olmo_unsharded

log = logging.getLogger(__name__)

__all__ = [
    "DTYPES",
    "SAMPLE_NAMES",
    "SHARDED_SAMPLE_NAMES",
    "Sample",
    "build_sample",
    "encode_key",
    "write_dcp",
    "write_olmo_core_v01_model",
    "write_olmo_core_v01_optim",
    "write_olmo_encoded_safetensors",
    "write_olmo_unsharded",
    "write_torch_legacy",
]

SAMPLE_NAMES: tuple[str, ...] = (
    "olmo1-unsharded",
    "olmo2-unsharded-safetensors",
    "olmo-core-unsharded",
    "transformers-olmo",
    "transformers-olmo2",
    "transformers-olmo3",
    "transformers-olmoe",
    "transformers-olmo2-sharded",
    "transformers-olmo2-bin",
    "transformers-olmo2-bin-sharded",
    "hf-olmo",
    "olmo1-sharded-torch-legacy",
    "olmo1-sharded-torch-new",
    "olmo2-sharded-local",
    "olmo2-sharded-olmo-core",
    "olmo-core-dcp",
)

# Sharded variants accept ``world_size``; every other option is rejected.
SHARDED_SAMPLE_NAMES: frozenset[str] = frozenset(
    {
        "olmo1-sharded-torch-legacy",
        "olmo1-sharded-torch-new",
        "olmo2-sharded-local",
        "olmo2-sharded-olmo-core",
        "olmo-core-dcp",
    }
)
# A shard size small enough that the tiny OLMo 2 model needs at least three files.
TRANSFORMERS_SHARD_SIZE = "60KB"
BIN_SHARDS = 3


def _builder(name: str) -> Callable[..., Sample]:
    from olmo_inspect.samples import (
        fsdp_local,
        olmo_core_v01,
        sharded,
        transformers_samples,
        unsharded,
    )

    def transformers(model_type: str, max_shard_size: str | None = None) -> Callable[..., Sample]:
        return lambda out_dir, dtype: transformers_samples.build_transformers(
            name, out_dir, dtype, model_type, max_shard_size
        )

    builders: dict[str, Callable[..., Sample]] = {
        "olmo1-unsharded": unsharded.build_olmo1_unsharded,
        "olmo2-unsharded-safetensors": unsharded.build_olmo2_unsharded_safetensors,
        "olmo-core-unsharded": unsharded.build_olmo_core_unsharded,
        "transformers-olmo": transformers("olmo"),
        "transformers-olmo2": transformers("olmo2"),
        "transformers-olmo3": transformers("olmo3"),
        "transformers-olmoe": transformers("olmoe"),
        "transformers-olmo2-sharded": transformers("olmo2", TRANSFORMERS_SHARD_SIZE),
        "transformers-olmo2-bin": lambda out_dir, dtype: (
            transformers_samples.build_transformers_bin(name, out_dir, dtype)
        ),
        "transformers-olmo2-bin-sharded": (
            lambda out_dir, dtype: transformers_samples.build_transformers_bin(
                name, out_dir, dtype, shards=BIN_SHARDS
            )
        ),
        "hf-olmo": unsharded.build_hf_olmo,
        "olmo1-sharded-torch-legacy": sharded.build_torch_legacy,
        "olmo1-sharded-torch-new": sharded.build_torch_new,
        "olmo2-sharded-local": fsdp_local.build_olmo2_sharded_local,
        "olmo2-sharded-olmo-core": olmo_core_v01.build_olmo2_sharded_olmo_core,
        "olmo-core-dcp": sharded.build_olmo_core_dcp,
    }
    return builders[name]


def build_sample(name: str, out_dir: Path, *, dtype: str = "float32", **options: Any) -> Sample:
    """Build the sample ``name`` into ``out_dir`` (created) and return what was written.

    Args:
        name: one of ``SAMPLE_NAMES``.
        out_dir: the checkpoint directory to create; it must not exist or be empty.
        dtype: model dtype, one of ``DTYPES`` (the optimizer state has the same dtype).
        **options: ``world_size`` (int, default 2) for the sharded variants,
            ``with_optim`` (bool) for ``olmo-core-unsharded``.

    Raises:
        ValueError: for an unknown name, dtype or option, or a non-empty ``out_dir``.
    """
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample {name!r}: use one of {', '.join(SAMPLE_NAMES)}")
    torch_dtype = resolve_dtype(dtype)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir}: sample directory is not empty; pass a new or empty one")

    allowed = {"world_size"} if name in SHARDED_SAMPLE_NAMES else set()
    if name == "olmo-core-unsharded":
        allowed = {"with_optim"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"invalid options {sorted(unknown)} for sample {name!r}")

    world_size = int(options.get("world_size", DEFAULT_WORLD_SIZE))
    if world_size < 1:
        raise ValueError(f"invalid world_size {world_size} for sample {name!r}: use >= 1")

    out_dir.mkdir(parents=True, exist_ok=True)
    builder = _builder(name)
    log.info("building sample %s into %s", name, out_dir)
    if name in SHARDED_SAMPLE_NAMES:
        return builder(out_dir, torch_dtype, world_size)
    return builder(out_dir, torch_dtype, **options)
