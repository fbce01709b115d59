"""Reader for OLMo-core (1.x to 3.x) checkpoints: a step directory or a bare ``model_and_optim/``.

A step directory holds ``config.json`` (the experiment config, without ``model_type``),
``.metadata.json`` (OLMo-core's version), ``model_and_optim/`` written by
torch.distributed.checkpoint with several ``__{rank}_{i}.distcp`` files per rank, and
``train/rank{N}.pt``. OLMo-core pickles its own ``_StorageInfo`` class into ``.metadata``, which
the restricted unpickler reads like torch's. Reads metadata only; see
:mod:`olmo_inspect.formats.dcp`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from olmo_inspect.formats.dcp import DCP_FOLDER, dcp_checkpoint
from olmo_inspect.io.dcp_metadata import METADATA_FILE
from olmo_inspect.model import Checkpoint, CheckpointKind

if TYPE_CHECKING:
    from pathlib import Path

    from olmo_inspect.detect import Detection

OLMO_CORE_METADATA_JSON = ".metadata.json"

# .metadata.json contains a version and a flag, so anything larger is not that file.
MAX_METADATA_JSON_BYTES = 1 << 20


def read(detection: Detection, *, deep: bool = False) -> Checkpoint:
    """Read an OLMo-core checkpoint directory, or a bare ``model_and_optim/`` folder, as metadata.

    ``deep`` also parses every ``.distcp`` item's inner zip and sets each piece's
    ``data.data_start``.

    Raises:
        IncompleteCheckpoint: ``.metadata`` is missing.
        CorruptFile, UnsupportedFormat, UnsafePickle: ``.metadata`` cannot be read.
    """
    root = detection.path
    bare = (root / METADATA_FILE).is_file() and not (root / DCP_FOLDER).is_dir()
    folder = root if bare else root / DCP_FOLDER
    checkpoint = dcp_checkpoint(detection, CheckpointKind.OLMO_CORE, root, folder, deep=deep)

    if bare:
        checkpoint.notes.append(
            "a bare DCP folder: the experiment config and the trainer state live next to it "
            "in the step directory (config.json, train/); open that directory to see them"
        )
        return checkpoint

    metadata_json = _read_metadata_json(root / OLMO_CORE_METADATA_JSON, checkpoint)
    if metadata_json is not None:
        checkpoint.details["metadata_json"] = metadata_json
        for info in checkpoint.files:
            if info.path == OLMO_CORE_METADATA_JSON:
                info.role = "metadata"
    return checkpoint


def _read_metadata_json(path: Path, checkpoint: Checkpoint) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_METADATA_JSON_BYTES:
            checkpoint.notes.append(
                f"{path.name} is too large to be OLMo-core's metadata; not read"
            )
            return None
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        checkpoint.notes.append(f"{path.name} cannot be parsed ({error}); its version is unknown")
        return None
    if not isinstance(value, dict):
        checkpoint.notes.append(f"{path.name} is not a JSON object; its version is unknown")
        return None
    return value
