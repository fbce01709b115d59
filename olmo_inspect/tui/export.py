"""Write a checkpoint's JSON report to a new file in the current directory.

Never writes into the checkpoint: when the current directory is the checkpoint directory or
inside it, the export raises ``UsageError`` and writes nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from olmo_inspect.errors import UsageError
from olmo_inspect.model import Checkpoint

EXPORT_PREFIX = "olmo-inspect-"
EXPORT_SUFFIX = ".json"

# Characters kept from the checkpoint's folder name in the export file name.
UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

# How many numbered names to try before giving up on finding a free one.
MAX_NAME_ATTEMPTS = 1000


def _checkpoint_root(checkpoint: Checkpoint) -> Path:
    path = checkpoint.path.resolve()
    return path if path.is_dir() else path.parent


def export_name(checkpoint: Checkpoint) -> str:
    """Return the base file name of the export: ``olmo-inspect-<folder>.json``."""
    stem = UNSAFE_NAME_CHARS.sub("_", checkpoint.path.name).strip("._") or "checkpoint"
    return f"{EXPORT_PREFIX}{stem}{EXPORT_SUFFIX}"


def export_json(checkpoint: Checkpoint, directory: Path | None = None) -> Path:
    """Write the ``--json`` document of ``checkpoint`` to a new file in ``directory``.

    Args:
        checkpoint: The checkpoint to describe.
        directory: Where to write; the current directory when None.

    Returns:
        The path written. An existing file is never replaced: ``-1``, ``-2``, ... are added.

    Raises:
        UsageError: ``directory`` is the checkpoint directory or inside it.
        OSError: The file cannot be created or written.
    """
    target_dir = (directory or Path.cwd()).resolve()
    root = _checkpoint_root(checkpoint)
    if target_dir == root or root in target_dir.parents:
        raise UsageError(
            f"{target_dir}: the current directory is inside the checkpoint {root}; "
            "run olmo-inspect from another directory to export JSON."
        )

    # The CLI's builder, so the file matches ``olmo-inspect PATH --json``.
    from olmo_inspect.cli import checkpoint_json

    text = json.dumps(checkpoint_json(checkpoint), indent=1, default=str) + "\n"
    base = export_name(checkpoint)
    stem = base.removesuffix(EXPORT_SUFFIX)
    for attempt in range(MAX_NAME_ATTEMPTS):
        name = base if attempt == 0 else f"{stem}-{attempt}{EXPORT_SUFFIX}"
        path = target_dir / name
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            continue
        return path

    raise UsageError(
        f"{target_dir}: {MAX_NAME_ATTEMPTS} files named {stem}*.json already exist; "
        "remove old exports and try again."
    )
