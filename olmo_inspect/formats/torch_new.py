"""Reader for OLMo ``torch_new`` sharded checkpoints (``sharded_checkpointer: torch_new``).

The layout: ``config.yaml``, ``model_and_optim/`` written by torch.distributed.checkpoint
(``.metadata`` and ``__{rank}_{i}.distcp`` files, keys ``model.<name>`` and ``optim.*``) and
``train/rank{N}.pt`` with each rank's trainer state. Reads metadata only; see
:mod:`olmo_inspect.formats.dcp`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from olmo_inspect.formats.dcp import DCP_FOLDER, dcp_checkpoint
from olmo_inspect.model import Checkpoint, CheckpointKind

if TYPE_CHECKING:
    from olmo_inspect.detect import Detection


def read(detection: Detection, *, deep: bool = False) -> Checkpoint:
    """Read an OLMo ``torch_new`` checkpoint directory as metadata.

    ``deep`` also parses every ``.distcp`` item's inner zip and sets each piece's
    ``data.data_start``.

    Raises:
        IncompleteCheckpoint: ``model_and_optim/.metadata`` is missing.
        CorruptFile, UnsupportedFormat, UnsafePickle: ``.metadata`` cannot be read.
    """
    root = detection.path
    return dcp_checkpoint(
        detection, CheckpointKind.OLMO_SHARDED_TORCH_NEW, root, root / DCP_FOLDER, deep=deep
    )
