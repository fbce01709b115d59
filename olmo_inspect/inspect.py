"""Open a path as a checkpoint, a bare state-dict file or a training run folder.

This is the one entry point the CLI, the TUI and the conversion engine use to read metadata.
It never imports torch or Textual.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import replace
from pathlib import Path

from olmo_inspect.detect import LATEST_PREFIX, STEP_FOLDER, Detection, detect, latest_target
from olmo_inspect.errors import InspectError, UsageError
from olmo_inspect.formats import read_checkpoint
from olmo_inspect.formats.common import checkpoint_from_detection, file_info
from olmo_inspect.formats.olmo_unsharded import add_state_dict
from olmo_inspect.formats.state_dict import read_state_dict_file
from olmo_inspect.model import Checkpoint, CheckpointKind, FileInfo, RunEntry, RunFolder

log = logging.getLogger(__name__)

# Names of per-rank files of sharded checkpoints (torch_legacy, local, olmo_core 0.1, train/).
RANK_FILE_NAME = re.compile(r"rank_?\d+\.(pt|safetensors)")

# Leading tensor-name patterns of each kind, for a bare state-dict file; first match wins.
NAME_PREFIXES: tuple[tuple[str, CheckpointKind], ...] = (
    ("model.transformer.", CheckpointKind.HF_OLMO),
    ("transformer.", CheckpointKind.OLMO_UNSHARDED),
    ("model.layers.", CheckpointKind.TRANSFORMERS),
    ("model.embed_tokens.", CheckpointKind.TRANSFORMERS),
    ("blocks.", CheckpointKind.OLMO_CORE_UNSHARDED),
    ("embeddings.", CheckpointKind.OLMO_CORE_UNSHARDED),
)


def open_path(path: Path, *, deep: bool = False) -> Checkpoint | RunFolder:
    """Read ``path`` as metadata and return what it is.

    With ``deep``, sharded readers parse every rank's metadata, not only rank 0's.

    Raises:
        InspectError: the path contains nothing readable. The message names the file and what
            to do.
    """
    started = time.perf_counter()
    detection = detect(Path(os.path.abspath(path)))
    if detection.is_run_folder:
        log.info("%s: a run folder", detection.path)
        return read_run_folder(detection.path)
    if detection.single_file:
        return read_single_file(detection)

    log.info("%s: detected %s (%s)", detection.path, detection.kind, "; ".join(detection.evidence))
    checkpoint = read_checkpoint(detection, deep=deep)
    if not checkpoint.tensors and not checkpoint.problems:
        checkpoint.problems.append(f"{checkpoint.path}: the checkpoint holds no model tensors")
    mark_missing_files(checkpoint)
    log.info(
        "%s: read %d tensors from %d files in %.3f s, %d problems",
        checkpoint.path,
        len(checkpoint.tensors),
        len(checkpoint.files),
        time.perf_counter() - started,
        len(checkpoint.problems),
    )
    return checkpoint


def mark_missing_files(checkpoint: Checkpoint) -> None:
    """Flag the files and shard pieces that the metadata names but the directory lacks.

    One ``stat`` per distinct file, so the TUI and ``--json`` can show lost pieces without
    every reader tracking it.
    """
    exists: dict[str, bool] = {}

    def is_missing(file: str) -> bool:
        if file not in exists:
            exists[file] = (checkpoint.path / file).exists()
        return not exists[file]

    for info in checkpoint.files:
        info.missing = is_missing(info.path)
    tensors = list(checkpoint.tensors)
    if checkpoint.optimizer is not None:
        tensors += checkpoint.optimizer.tensors
    listed = {info.path for info in checkpoint.files}
    for tensor in tensors:
        if not any(is_missing(piece.file) for piece in tensor.shards):
            continue
        tensor.shards = [
            replace(piece, missing=True) if is_missing(piece.file) else piece
            for piece in tensor.shards
        ]
        for piece in tensor.shards:
            if piece.missing and piece.file not in listed:
                listed.add(piece.file)
                checkpoint.files.append(
                    FileInfo(
                        path=piece.file, bytes=0, role="missing", rank=piece.rank, missing=True
                    )
                )


def open_checkpoint(path: Path, *, deep: bool = False) -> Checkpoint:
    """Read ``path`` as one checkpoint; a run folder is a usage error here."""
    result = open_path(path, deep=deep)
    if isinstance(result, RunFolder):
        raise UsageError(
            f"{path}: a training run folder with {len(result.checkpoints)} checkpoints; "
            "pass one of its step folders"
        )
    return result


def read_single_file(detection: Detection) -> Checkpoint:
    """Read a bare state-dict file; its kind comes from the tensor names.

    Raises:
        UsageError: the file is one rank's file of a sharded checkpoint, which only makes
            sense with the other ranks.
    """
    path = detection.path
    _reject_rank_file(path)
    weights = read_state_dict_file(path, path.parent)
    kind = infer_kind_from_names([tensor.name for tensor in weights.tensors])
    checkpoint = checkpoint_from_detection(detection, kind or CheckpointKind.OLMO_UNSHARDED)
    add_state_dict(checkpoint, weights)
    if kind is None:
        checkpoint.notes.append(
            "the tensor names match no OLMo layout; shown as a plain state dict"
        )
    else:
        checkpoint.evidence.append(f"tensor names look like {kind}")
    checkpoint.files = [file_info(path, path.parent, "model", tensors=len(weights.tensors))]
    return checkpoint


def _reject_rank_file(path: Path) -> None:
    if not RANK_FILE_NAME.fullmatch(path.name):
        return
    for folder in (path.parent, path.parent.parent):
        try:
            owner = detect(folder)
        except InspectError:
            continue
        if owner.kind is not None and owner.kind.is_sharded:
            raise UsageError(
                f"{path}: one rank's file of the {owner.kind} checkpoint in {folder}; "
                f"open the folder: olmo-inspect {folder}"
            )


def infer_kind_from_names(names: list[str]) -> CheckpointKind | None:
    for prefix, kind in NAME_PREFIXES:
        if any(name.startswith(prefix) for name in names):
            return kind
    return None


def read_run_folder(path: Path) -> RunFolder:
    """List the checkpoints of a training run folder, newest step first.

    ``latest*`` symlinks mark the entry they point to. An entry that cannot be read is listed
    as incomplete with its error.
    """
    latest_targets: set[Path] = set()
    candidates: list[Path] = []
    folder = RunFolder(path=path)
    for entry in sorted(path.iterdir()):
        target = latest_target(entry) if entry.name.startswith(LATEST_PREFIX) else None
        if target is not None:
            latest_targets.add(target.resolve())
            continue
        if entry.is_symlink() and not entry.exists():
            folder.notes.append(f"{entry.name} points to a missing {os.readlink(entry)}")
            continue
        if entry.is_dir() and not entry.name.startswith(LATEST_PREFIX):
            candidates.append(entry)

    for candidate in candidates:
        match = STEP_FOLDER.match(candidate.name)
        step = int(match.group(1)) if match else None
        entry = RunEntry(
            path=candidate,
            step=step,
            kind=None,
            bytes=_folder_bytes(candidate),
            complete=False,
            latest=candidate.resolve() in latest_targets,
        )
        try:
            checkpoint = open_checkpoint(candidate)
        except InspectError as error:
            if match is None:
                continue
            entry.problems.append(str(error))
        else:
            entry.kind = checkpoint.kind
            entry.complete = checkpoint.complete
            entry.problems = list(checkpoint.problems)
            if entry.step is None:
                entry.step = checkpoint.step
        folder.checkpoints.append(entry)

    folder.checkpoints.sort(key=lambda item: (item.step is None, -(item.step or 0), item.path.name))
    return folder


def _folder_bytes(path: Path) -> int:
    total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            try:
                total += (Path(directory) / name).stat().st_size
            except OSError:
                continue
    return total
