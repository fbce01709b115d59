"""Shared helpers of the engine and command tests: open, convert, checksum, list folders."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from olmo_inspect.convert import engine
from olmo_inspect.inspect import open_path
from olmo_inspect.model import Checkpoint, CheckpointKind


def digest_tree(root: Path) -> dict[str, str]:
    """Return the SHA-256 of every file under ``root``, keyed by relative path."""
    digests = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def open_checkpoint(path: Path) -> Checkpoint:
    """Open ``path`` and check that it is one checkpoint (not a run folder)."""
    checkpoint = open_path(path)
    assert isinstance(checkpoint, Checkpoint)
    return checkpoint


def convert(source: Path, target: CheckpointKind, output: Path, **options: Any) -> engine.Result:
    """Plan and run one conversion with ``ConvertOptions(output=output, **options)``."""
    checkpoint = open_checkpoint(source)
    plan = engine.plan(checkpoint, target, engine.ConvertOptions(output=output, **options))
    return engine.run(plan)


def entries(folder: Path) -> list[str]:
    """Return the sorted names directly inside ``folder``."""
    return sorted(path.name for path in folder.iterdir())
