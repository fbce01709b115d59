"""The model and optimizer of a torch.distributed.checkpoint (DCP) folder, shared by the readers of
OLMo ``torch_new`` and OLMo-core checkpoints.

Keys ``model.<name>`` are model tensors (``model.`` and every ``_fsdp_wrapped_module.`` removed);
``optim.state.<fqn>.<key>`` are optimizer tensors named ``<fqn>.<key>``;
``optim.param_groups.<group>.<field>`` are small pickled values shown as param groups (``<group>``
is an index for OLMo ``torch_new`` and a parameter FQN for OLMo-core). The checks read file sizes
and two small signatures per file; ``deep`` also parses every item's inner zip.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_inspect.errors import IncompleteCheckpoint, InspectError
from olmo_inspect.formats.common import (
    list_checkpoint_files,
    read_train_state,
    relative_path,
)
from olmo_inspect.formats.coverage import coverage_problems
from olmo_inspect.formats.optimizer import param_group_summary
from olmo_inspect.io.dcp_metadata import (
    METADATA_FILE,
    DcpItem,
    DcpMetadata,
    DcpTensor,
    check_item_bounds,
    read_bytes_item,
    read_dcp_metadata,
    read_item_tensor,
)
from olmo_inspect.model import (
    Checkpoint,
    CheckpointKind,
    FileInfo,
    OptimizerInfo,
    ShardPiece,
    StoredBytes,
    TensorInfo,
    dtype_size,
)

if TYPE_CHECKING:
    from olmo_inspect.detect import Detection

log = logging.getLogger(__name__)

DCP_FOLDER = "model_and_optim"
DISTCP_FILE = re.compile(r"^__(\d+)_(\d+)\.distcp$")
MODEL_PREFIX = "model."
OPTIM_STATE_PREFIX = "optim.state."
OPTIM_GROUPS_PREFIX = "optim.param_groups."
FSDP_WRAPPED = "_fsdp_wrapped_module."
TRAIN_DIR = "train"
TRAIN_RANK0 = "rank0.pt"
TRAIN_RANK_FILE = re.compile(r"^rank(\d+)\.pt$")
DCP_OPTIMIZER_KIND = "torch.distributed.checkpoint (optimizer state dict)"

# How many tensor names a problem sentence lists before it counts the rest.
MAX_NAMES_IN_PROBLEM = 8


@dataclass
class DcpContents:
    """The tensors, optimizer, files and problems of one DCP folder."""

    metadata: DcpMetadata
    tensors: list[TensorInfo]
    optimizer: OptimizerInfo | None
    files: list[FileInfo]
    ranks: list[int]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def world_size(self) -> int | None:
        return max(self.ranks) + 1 if self.ranks else None


def clean_name(name: str) -> str:
    """Remove every ``_fsdp_wrapped_module.`` from a parameter name."""
    return name.replace(FSDP_WRAPPED, "")


def model_name(key: str) -> str:
    """Return the unsharded model name of the DCP key ``model.<name>``."""
    return clean_name(key.removeprefix(MODEL_PREFIX))


def split_state_key(key: str) -> tuple[str, str]:
    """Split ``optim.state.<fqn>.<state key>`` into the parameter FQN and the state key.

    State keys (``exp_avg``, ``exp_avg_sq``, ``step``) never contain a dot, so the last dot
    separates them from a dotted FQN.
    """
    fqn, _, state_key = key.removeprefix(OPTIM_STATE_PREFIX).rpartition(".")
    return clean_name(fqn), state_key


def piece_key(key: str, offsets: tuple[int, ...]) -> str:
    """Return the name of one chunk in its ``.distcp`` file: the DCP key and the chunk offset."""
    return f"{key}@({', '.join(str(offset) for offset in offsets)})"


def distcp_rank(file: str) -> int | None:
    """Return the rank of a ``__{rank}_{i}.distcp`` file name, or None for another name."""
    match = DISTCP_FILE.match(Path(file).name)
    return int(match.group(1)) if match else None


def read_dcp_folder(root: Path, folder: Path, *, deep: bool = False) -> DcpContents:
    """Read ``folder/.metadata`` and check the ``.distcp`` files it names.

    File paths in the records are relative to ``root`` (the checkpoint directory).

    Raises:
        IncompleteCheckpoint: ``.metadata`` is missing.
        CorruptFile, UnsupportedFormat, UnsafePickle: ``.metadata`` cannot be read.
    """
    metadata_path = folder / METADATA_FILE
    if not metadata_path.is_file():
        raise IncompleteCheckpoint(
            f"{metadata_path}: missing, so the .distcp files cannot be placed; re-copy the "
            "checkpoint with its .metadata file"
        )
    metadata = read_dcp_metadata(metadata_path)
    prefix = relative_path(folder, root) if folder != root else ""

    def in_root(file: str) -> str:
        return f"{prefix}/{file}" if prefix else file

    reader = _Reader(root, folder, metadata, in_root)
    reader.build_tensors()
    reader.check_files()
    if deep:
        reader.resolve_items()
    reader.check_coverage()

    optimizer = reader.optimizer()
    files = reader.file_infos()
    contents = DcpContents(
        metadata=metadata,
        tensors=reader.model,
        optimizer=optimizer,
        files=files,
        ranks=reader.ranks(),
        problems=reader.problems,
        notes=reader.notes,
    )
    contents.details = {
        "dcp_folder": prefix or ".",
        "dcp_files": metadata.files,
        "dcp_version": metadata.version,
        "dcp_storage_info_class": metadata.storage_info_classes,
        "dcp_tensor_keys": len(metadata.tensors),
        "dcp_bytes_keys": len(metadata.bytes_keys),
        "dcp_items": len(metadata.items),
        "dcp_files_per_rank": reader.files_per_rank(),
    }
    if metadata.unknown_globals:
        contents.notes.append(
            f"{in_root(METADATA_FILE)} names classes off the allow-list, kept as inert "
            f"placeholders: {', '.join(metadata.unknown_globals)}"
        )
    return contents


class _Reader:
    """The steps of :func:`read_dcp_folder`, sharing the lookups they build."""

    def __init__(self, root: Path, folder: Path, metadata: DcpMetadata, in_root: Any) -> None:
        self.root = root
        self.folder = folder
        self.metadata = metadata
        self.in_root = in_root
        self.lookup = metadata.item_lookup()
        self.model: list[TensorInfo] = []
        self.optim: list[TensorInfo] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        # Model and optimizer tensor names with an item in each file (relative to the folder).
        self.names_in_file: dict[str, set[str]] = defaultdict(set)
        self.model_files: set[str] = set()
        self.missing_files: set[str] = set()

    def build_tensors(self) -> None:
        other_keys: list[str] = []
        for key, entry in self.metadata.tensors.items():
            if key.startswith(MODEL_PREFIX):
                self.model.append(self._tensor(model_name(key), key, entry))
            elif key.startswith(OPTIM_STATE_PREFIX):
                fqn, state_key = split_state_key(key)
                self.optim.append(self._tensor(f"{fqn}.{state_key}", key, entry))
            else:
                other_keys.append(key)
                self.model.append(self._tensor(clean_name(key), key, entry))

        model_names = {tensor.name for tensor in self.model}
        self.model_files = {
            file for file, names in self.names_in_file.items() if names & model_names
        }
        if other_keys:
            shown = ", ".join(other_keys[:MAX_NAMES_IN_PROBLEM])
            self.notes.append(
                f"{len(other_keys)} DCP tensor keys are outside model. and optim. and are listed "
                f"as model tensors under their own key: {shown}"
            )

    def _tensor(self, name: str, key: str, entry: DcpTensor) -> TensorInfo:
        shards: list[ShardPiece] = []
        for chunk in entry.chunks:
            item = self.lookup.get((key, chunk.offsets))
            chunk_key = piece_key(key, chunk.offsets)
            if item is None:
                self.problems.append(
                    f"{name}: the chunk at {list(chunk.offsets)} has no storage entry in "
                    f"{self.in_root(METADATA_FILE)}"
                )
                continue
            self.names_in_file[item.file].add(name)
            file = self.in_root(item.file)
            shards.append(
                ShardPiece(
                    rank=distcp_rank(item.file),
                    file=file,
                    key=chunk_key,
                    numel=chunk.numel,
                    offsets=chunk.offsets,
                    shape=chunk.sizes,
                    byte_range=(item.start, item.end),
                    data=StoredBytes(
                        file=file,
                        key=chunk_key,
                        dtype=entry.dtype,
                        data_start=None,
                        storage_nbytes=chunk.numel * dtype_size(entry.dtype),
                    ),
                )
            )
        return TensorInfo(
            name=name,
            shape=entry.size,
            dtype=entry.dtype,
            file=shards[0].file if len({piece.file for piece in shards}) == 1 else None,
            stored_key=key if key != name else None,
            shards=shards,
        )

    def check_files(self) -> None:
        """Check that each named file exists, is exactly as long as its items, and starts and
        ends with a zip.

        NOTE: a file swapped for another rank's file of the same length and item layout passes
        these checks. Only ``deep`` (every item's dtype and shape) can catch it, and only when the
        swapped items differ in shape.
        """
        furthest: dict[str, DcpItem] = {}
        first: dict[str, DcpItem] = {}
        for item in self.metadata.items:
            if item.file not in furthest or item.end > furthest[item.file].end:
                furthest[item.file] = item
            if item.file not in first or item.start < first[item.file].start:
                first[item.file] = item

        for file in sorted(furthest):
            path = self.folder / file
            shown = self.in_root(file)
            try:
                size = path.stat().st_size
            except OSError:
                self.missing_files.add(file)
                self._file_problem(file, f"{shown} is missing")
                continue
            needed = furthest[file].end
            if size < needed:
                self.missing_files.add(file)
                self._file_problem(
                    file, f"{shown} is {size} bytes, shorter than the {needed} its items need"
                )
                continue
            if size > needed:
                self._file_problem(
                    file,
                    f"{shown} is {size} bytes but its items end at {needed}, so it is not the "
                    "file .metadata describes",
                )
                continue
            self._check_signatures(path, shown, [first[file], furthest[file]])

    def _check_signatures(self, path: Path, shown: str, items: list[DcpItem]) -> None:
        try:
            with path.open("rb") as handle:
                for item in items:
                    reason = check_item_bounds(handle, shown, item)
                    if reason is not None:
                        self._file_problem(item.file, f"{shown}: {reason}")
                        return
        except OSError as error:
            self.missing_files.add(items[0].file)
            self._file_problem(items[0].file, f"{shown} cannot be read ({error.strerror})")

    def _file_problem(self, file: str, sentence: str) -> None:
        names = sorted(self.names_in_file.get(file, ()))
        if names:
            listed = ", ".join(names[:MAX_NAMES_IN_PROBLEM])
            more = len(names) - MAX_NAMES_IN_PROBLEM
            suffix = f" and {more} more" if more > 0 else ""
            sentence = f"{sentence}; it holds pieces of {listed}{suffix}"
        self.problems.append(sentence)

    def resolve_items(self) -> None:
        """Parse every tensor item's inner zip, check it against .metadata and set ``data``."""
        for tensor in [*self.model, *self.optim]:
            resolved: list[ShardPiece] = []
            for piece in tensor.shards:
                resolved.append(self._resolve_piece(tensor, piece))
            tensor.shards = resolved

    def _resolve_piece(self, tensor: TensorInfo, piece: ShardPiece) -> ShardPiece:
        if piece.byte_range is None or piece.data is None:
            return piece
        file = piece.file.rsplit("/", 1)[-1] if "/" in piece.file else piece.file
        if file in self.missing_files:
            return piece
        start, end = piece.byte_range
        try:
            item = read_item_tensor(self.folder / file, start, end - start)
        except InspectError as error:
            self.problems.append(f"{tensor.name}: {error}")
            return piece

        expected_bytes = piece.numel * dtype_size(tensor.dtype)
        if item.dtype != tensor.dtype or tuple(item.shape) != tuple(piece.shape or ()):
            self.problems.append(
                f"{tensor.name}: the item at {piece.file} bytes [{start}, {end}) holds "
                f"{item.dtype}{list(item.shape)}, .metadata expects "
                f"{tensor.dtype}{list(piece.shape or ())}"
            )
        elif item.storage_nbytes < expected_bytes:
            self.problems.append(
                f"{tensor.name}: the item at {piece.file} bytes [{start}, {end}) stores "
                f"{item.storage_nbytes} bytes, the chunk needs {expected_bytes}"
            )
        data = StoredBytes(
            file=piece.data.file,
            key=piece.data.key,
            dtype=item.dtype,
            data_start=item.data_start,
            storage_nbytes=item.storage_nbytes,
            storage_offset=item.storage_offset,
            stride=item.stride,
        )
        return ShardPiece(
            rank=piece.rank,
            file=piece.file,
            key=piece.key,
            numel=piece.numel,
            offsets=piece.offsets,
            shape=piece.shape,
            byte_range=piece.byte_range,
            data=data,
        )

    def check_coverage(self) -> None:
        for tensor in [*self.model, *self.optim]:
            self.problems.extend(coverage_problems(tensor))

    def optimizer(self) -> OptimizerInfo | None:
        group_keys = [
            key for key in self.metadata.bytes_keys if key.startswith(OPTIM_GROUPS_PREFIX)
        ]
        if not self.optim and not group_keys:
            return None
        values = self._read_group_values(group_keys)
        optim_files = sorted({piece.file for tensor in self.optim for piece in tensor.shards})
        state_keys = sorted({split_state_key(t.stored_key or t.name)[1] for t in self.optim})
        return OptimizerInfo(
            kind=DCP_OPTIMIZER_KIND,
            param_groups=param_groups_from_values(values),
            state_keys=state_keys,
            tensors=self.optim,
            files=optim_files,
        )

    def _read_group_values(self, keys: list[str]) -> dict[str, Any]:
        """Read each ``optim.param_groups.*`` value, opening every file once."""
        by_file: dict[str, list[DcpItem]] = defaultdict(list)
        for key in keys:
            item = self.lookup.get((key, None))
            if item is not None:
                by_file[item.file].append(item)

        values: dict[str, Any] = {}
        for file, items in sorted(by_file.items()):
            if file in self.missing_files:
                continue
            shown = self.in_root(file)
            try:
                with (self.folder / file).open("rb") as handle:
                    for item in items:
                        values[item.key] = self._read_value(handle, shown, item)
            except OSError as error:
                self.problems.append(f"{shown} cannot be read ({error.strerror})")
        return values

    def _read_value(self, handle: Any, shown: str, item: DcpItem) -> Any:
        try:
            return read_bytes_item(handle, shown, item)
        except InspectError as error:
            log.debug("param-group value %s not read: %s", item.key, error)
            return f"<not readable: {error}>"

    def ranks(self) -> list[int]:
        """Return the ranks of the files .metadata names; other .distcp files are only noted."""
        named = {distcp_rank(file) for file in self.metadata.files}
        on_disk_names = _distcp_names(self.folder)
        unreferenced = [name for name in on_disk_names if name not in set(self.metadata.files)]
        if unreferenced:
            self.notes.append(
                f"{len(unreferenced)} .distcp files are not named in .metadata and are ignored: "
                + ", ".join(self.in_root(name) for name in unreferenced[:MAX_NAMES_IN_PROBLEM])
            )
        return sorted(rank for rank in named if rank is not None)

    def files_per_rank(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for file in self.metadata.files:
            rank = distcp_rank(file)
            counts[str(rank) if rank is not None else "unknown"] += 1
        return dict(sorted(counts.items()))

    def file_infos(self) -> list[FileInfo]:
        infos = [file_record(self.folder / METADATA_FILE, self.in_root(METADATA_FILE), "metadata")]
        for file in sorted(set(self.metadata.files) | set(_distcp_names(self.folder))):
            role = "model" if file in self.model_files or not self.optim else "optim"
            infos.append(
                file_record(
                    self.folder / file,
                    self.in_root(file),
                    role,
                    rank=distcp_rank(file),
                    tensors=len(self.names_in_file.get(file, ())),
                )
            )
        return infos


def _distcp_names(folder: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(folder) if entry.name.endswith(".distcp"))
    except OSError:
        return []


def file_record(
    path: Path, shown: str, role: str, rank: int | None = None, tensors: int = 0
) -> FileInfo:
    """Return a FileInfo with ``shown`` as its path; a missing file has 0 bytes."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return FileInfo(path=shown, bytes=size, role=role, rank=rank, tensors=tensors)


def param_groups_from_values(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Build param groups from ``optim.param_groups.<group>.<field>`` values.

    Index-keyed groups (OLMo ``torch_new``) come out in index order, summarised as
    :func:`param_group_summary` does for unsharded optimizers (``params`` and ``param_names``
    counted). FQN-keyed groups (OLMo-core, one per parameter) with equal settings are merged
    into one group whose ``param_names`` lists the parameters.
    """
    groups: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        group, _, name = (
            key.removeprefix(OPTIM_GROUPS_PREFIX).removeprefix("param_groups.").rpartition(".")
        )
        groups.setdefault(group, {})[name] = value

    if all(group.isdigit() for group in groups):
        return [param_group_summary(groups[group]) for group in sorted(groups, key=int)]

    merged: list[dict[str, Any]] = []
    for group, values_of_group in groups.items():
        settings = param_group_summary(values_of_group)
        for existing in merged:
            if {k: v for k, v in existing.items() if k != "param_names"} == settings:
                existing["param_names"].append(clean_name(group))
                break
        else:
            merged.append({**settings, "param_names": [clean_name(group)]})
    return merged


def check_world_size(
    world_size: int | None, state_world_size: Any, state_file: str
) -> tuple[list[str], list[str]]:
    """Compare the ranks of the ``.distcp`` files with the trainer state's ``world_size``.

    Returns ``(problems, notes)``. Files from more ranks than the state names are a problem.
    Fewer ranks is only a note, because a rank whose chunks were all deduplicated writes no file.
    """
    if (
        world_size is None
        or not isinstance(state_world_size, int)
        or isinstance(state_world_size, bool)
    ):
        return [], []
    if world_size > state_world_size:
        return [
            f"the .distcp files name ranks up to {world_size - 1}, but {state_file} says "
            f"world_size {state_world_size}"
        ], []
    if world_size < state_world_size:
        return [], [
            f"{state_file} says world_size {state_world_size}, but only ranks 0-{world_size - 1} "
            "wrote .distcp files"
        ]
    return [], []


def train_rank_problems(
    root: Path, world_size: int | None, train_dir: str = TRAIN_DIR
) -> list[str]:
    """Return a sentence for each ``train/rank{N}.pt`` missing for a rank below ``world_size``."""
    if world_size is None or not (root / train_dir).is_dir():
        return []
    missing = [
        f"{train_dir}/rank{rank}.pt"
        for rank in range(world_size)
        if not (root / train_dir / f"rank{rank}.pt").is_file()
    ]
    if not missing:
        return []
    return [
        f"{', '.join(missing)} missing: the trainer state of those ranks cannot be restored "
        "(the weights are not affected)"
    ]


def dcp_checkpoint(
    detection: Detection,
    kind: CheckpointKind,
    root: Path,
    folder: Path,
    *,
    deep: bool = False,
) -> Checkpoint:
    """Build the Checkpoint of a DCP checkpoint directory ``root`` whose DCP folder is ``folder``.

    Adds the trainer state of ``train/rank0.pt`` when present and checks the world size the
    ``.distcp`` files show against it.
    """
    contents = read_dcp_folder(root, folder, deep=deep)
    checkpoint = Checkpoint(
        path=root,
        kind=kind,
        tensors=contents.tensors,
        problems=list(contents.problems),
        evidence=list(detection.evidence),
        notes=[*detection.notes, *contents.notes],
        config=detection.config,
        config_file=detection.config_file,
        config_text=detection.config_text,
        optimizer=contents.optimizer,
        world_size=contents.world_size,
        details=dict(contents.details),
    )
    if any(
        tensor.stored_key and tensor.stored_key.startswith(MODEL_PREFIX)
        for tensor in contents.tensors
    ):
        checkpoint.details["dcp_key_prefix"] = MODEL_PREFIX

    known = list(contents.files)
    if detection.config_file is not None:
        known.append(file_record(root / detection.config_file, detection.config_file, "config"))
    train_path = root / TRAIN_DIR / TRAIN_RANK0
    if train_path.is_file():
        add_train_state(checkpoint, train_path)
    checkpoint.problems.extend(train_rank_problems(root, contents.world_size))
    known.extend(train_files(root))
    checkpoint.files = checkpoint_files(root, known)
    return checkpoint


def add_train_state(checkpoint: Checkpoint, path: Path) -> None:
    """Set the checkpoint's trainer state from ``path`` and check its ``world_size``.

    An unreadable file becomes a problem, because the weights can still be inspected.
    """
    shown = relative_path(path, checkpoint.path)
    try:
        state, _ = read_train_state(path, checkpoint.path)
    except InspectError as error:
        checkpoint.problems.append(f"{shown}: the trainer state cannot be read ({error})")
        return
    checkpoint.train_state = state
    problems, notes = check_world_size(checkpoint.world_size, state.fields.get("world_size"), shown)
    checkpoint.problems.extend(problems)
    checkpoint.notes.extend(notes)


def train_files(root: Path) -> list[FileInfo]:
    """Return a record for each ``train/rank{N}.pt`` file."""
    infos = []
    folder = root / TRAIN_DIR
    if not folder.is_dir():
        return infos
    for path in sorted(folder.iterdir()):
        match = TRAIN_RANK_FILE.match(path.name)
        if match:
            infos.append(
                file_record(path, f"{TRAIN_DIR}/{path.name}", "train", int(match.group(1)))
            )
    return infos


def checkpoint_files(root: Path, known: list[FileInfo]) -> list[FileInfo]:
    """List every file under ``root``, using ``known`` records where they exist.

    Known files that are missing on disk stay in the list with 0 bytes, so the listing shows
    what the metadata expects.
    """
    by_path = {info.path: info for info in known}
    listed = []
    for info in list_checkpoint_files(root, {}):
        listed.append(by_path.pop(info.path, info))
    listed.extend(by_path.values())
    listed.sort(key=lambda info: info.path)
    return listed


__all__ = [
    "DCP_FOLDER",
    "DcpContents",
    "add_train_state",
    "check_world_size",
    "checkpoint_files",
    "clean_name",
    "dcp_checkpoint",
    "file_record",
    "model_name",
    "param_groups_from_values",
    "read_dcp_folder",
    "split_state_key",
    "train_files",
    "train_rank_problems",
]
