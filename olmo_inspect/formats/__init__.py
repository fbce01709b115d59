"""One module per checkpoint kind; each builds a Checkpoint from its files through io/.

Every reader module exposes ``read(detection: Detection, *, deep: bool = False) -> Checkpoint``.
Modules are imported on first use, so opening one kind never pays for the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from olmo_inspect.model import Checkpoint, CheckpointKind

if TYPE_CHECKING:
    from olmo_inspect.detect import Detection

Reader = Callable[..., Checkpoint]

READER_MODULES: dict[CheckpointKind, str] = {
    CheckpointKind.OLMO_UNSHARDED: "olmo_inspect.formats.olmo_unsharded",
    CheckpointKind.OLMO_SHARDED_TORCH_LEGACY: "olmo_inspect.formats.torch_legacy",
    CheckpointKind.OLMO_SHARDED_TORCH_NEW: "olmo_inspect.formats.torch_new",
    CheckpointKind.OLMO_SHARDED_LOCAL: "olmo_inspect.formats.local",
    CheckpointKind.OLMO_SHARDED_OLMO_CORE: "olmo_inspect.formats.olmo_core_v01",
    CheckpointKind.OLMO_CORE: "olmo_inspect.formats.olmo_core",
    CheckpointKind.OLMO_CORE_UNSHARDED: "olmo_inspect.formats.olmo_core_unsharded",
    CheckpointKind.TRANSFORMERS: "olmo_inspect.formats.transformers",
    CheckpointKind.HF_OLMO: "olmo_inspect.formats.hf_olmo",
}


def read_checkpoint(detection: Detection, *, deep: bool = False) -> Checkpoint:
    """Read the checkpoint that ``detection`` describes with its kind's reader."""
    assert detection.kind is not None
    module = importlib.import_module(READER_MODULES[detection.kind])
    return module.read(detection, deep=deep)
