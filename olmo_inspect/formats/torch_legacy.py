"""Reader for OLMo's ``torch_legacy`` sharded checkpoints: ``rank{N}.pt`` files of ShardedTensors.

Each ``rank{N}.pt`` is one ``torch.save`` zip that contains ``model`` and ``optim`` (FSDP's
sharded state dicts, whose values are ``ShardedTensor`` objects) next to the trainer state.
Every file repeats the ``ShardMetadata`` of all ranks, so one file (rank 0 when it is readable)
is parsed in full. The other files are checked through their zip directories only, by
comparing entry sizes with the local shard sizes that the parsed file predicts. With
``deep=True`` every rank's pickle is parsed and its local shards are compared with that
prediction. The reader uses metadata only. It never imports torch or reads tensor bytes.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_inspect.detect import Detection
from olmo_inspect.errors import CorruptFile, InspectError
from olmo_inspect.formats.common import (
    CONFIG_YAML,
    checkpoint_from_detection,
    list_checkpoint_files,
    train_state_from_value,
)
from olmo_inspect.formats.coverage import coverage_problems
from olmo_inspect.formats.fsdp_flat import strip_fsdp_wrappers
from olmo_inspect.formats.optimizer import param_group_summary
from olmo_inspect.io.torch_file import (
    StorageLocation,
    TorchFile,
    read_torch_file,
    zip_storage_locations,
)
from olmo_inspect.io.unpickler import (
    SHARDED_TENSOR,
    PickledObject,
    TensorRecord,
    WrapperSubclassRecord,
)
from olmo_inspect.model import (
    Checkpoint,
    CheckpointKind,
    FileInfo,
    OptimizerInfo,
    ShardPiece,
    StoredBytes,
    TensorInfo,
    contiguous_stride,
    dtype_size,
)

log = logging.getLogger(__name__)

RANK_FILE = re.compile(r"rank(\d+)\.pt")
ARCHIVE_RANK = re.compile(r"rank(\d+)")
MODEL_KEY = "model"
OPTIM_KEY = "optim"
PICKLE_ENTRY = "data.pkl"

# How many tensor names one problem sentence lists before it gives a count.
MAX_NAMES_IN_PROBLEM = 8

OPTIMIZER_KIND = "FSDP sharded optimizer state (ShardedTensor per parameter)"


@dataclass(frozen=True)
class RankZip:
    """A rank file's zip directory: the archive folder torch.save chose and its storages."""

    prefix: str
    locations: dict[str, StorageLocation]

    def entry(self, key: str) -> str:
        return f"{self.prefix}/data/{key}"


def read_rank_zip(path: Path) -> RankZip:
    """Read the archive folder name and storage entries of a ``torch.save`` zip, no pickle.

    Raises:
        CorruptFile: the file is not a readable zip or has no ``data.pkl`` entry.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise CorruptFile(
            f"{path}: not a valid torch.save zip ({error}); the file is probably truncated, "
            "re-copy it from its source"
        ) from error
    except OSError as error:
        raise CorruptFile(
            f"{path}: cannot read the file ({error.strerror}); check its permissions"
        ) from error

    with archive:
        prefix = None
        for name in archive.namelist():
            parts = name.split("/")
            if len(parts) == 2 and parts[1] == PICKLE_ENTRY:
                prefix = parts[0]
                break
        if prefix is None:
            raise CorruptFile(f"{path}: zip file without a data.pkl entry, not a torch.save file")
        locations = zip_storage_locations(path, archive)
    return RankZip(prefix=prefix, locations=locations)


@dataclass(frozen=True)
class ShardBox:
    """One ``ShardMetadata``: the rank that stores the piece, its offsets and sizes."""

    rank: int
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def numel(self) -> int:
        count = 1
        for size in self.sizes:
            count *= size
        return count


@dataclass
class LocalShard:
    """A local shard of the parsed rank: its metadata and the tensor that stores it."""

    box: ShardBox
    tensor: TensorRecord


@dataclass
class ShardedEntry:
    """One ShardedTensor of the parsed file, at ``path`` in its state dict."""

    path: tuple[str, ...]
    dtype: str
    shape: tuple[int, ...]
    boxes: list[ShardBox]
    local: list[LocalShard]


def _placement_rank(placement: Any, source: str) -> int:
    if isinstance(placement, PickledObject):
        rank = placement.field("_rank")
        if isinstance(rank, int):
            return rank
        if placement.pickle_args and isinstance(placement.pickle_args[0], str):
            placement = placement.pickle_args[0]
    if isinstance(placement, str):
        match = re.match(r"rank:(\d+)/", placement)
        if match:
            return int(match.group(1))
    raise CorruptFile(f"{source}: a ShardMetadata placement {placement!r:.60} names no rank")


def _shard_box(metadata: Any, source: str) -> ShardBox:
    if not isinstance(metadata, PickledObject):
        raise CorruptFile(f"{source}: a ShardedTensor lists {metadata!r:.60}, not ShardMetadata")
    offsets = metadata.field("shard_offsets")
    sizes = metadata.field("shard_sizes")
    if not isinstance(offsets, (list, tuple)) or not isinstance(sizes, (list, tuple)):
        raise CorruptFile(f"{source}: a ShardMetadata has no shard_offsets/shard_sizes")
    rank = _placement_rank(metadata.field("placement"), source)
    return ShardBox(rank, tuple(int(x) for x in offsets), tuple(int(x) for x in sizes))


def _sharded_state(value: PickledObject) -> tuple[Any, Any]:
    """Return (local_shards, ShardedTensorMetadata) from a ShardedTensor's pickled state."""
    state = value.pickle_state
    if isinstance(state, tuple) and len(state) >= 2:
        return state[0], state[1]
    fields = value.fields()
    return fields.get("_local_shards"), fields.get("_metadata")


def parse_sharded_tensor(value: PickledObject, path: tuple[str, ...], source: str) -> ShardedEntry:
    """Read a pickled ShardedTensor's global dtype, shape, shard boxes and local shards.

    Raises:
        CorruptFile: the pickled state is not a ShardedTensor's.
    """
    where = f"{source}: {'.'.join(path)}"
    local_shards, metadata = _sharded_state(value)
    if not isinstance(metadata, PickledObject):
        raise CorruptFile(f"{where} is a ShardedTensor without ShardedTensorMetadata")

    boxes = [_shard_box(item, where) for item in metadata.field("shards_metadata") or []]
    size = metadata.field("size")
    wrapper = value.pickle_args[0] if value.pickle_args else None
    if isinstance(size, (list, tuple)):
        shape = tuple(int(x) for x in size)
    elif isinstance(wrapper, WrapperSubclassRecord):
        shape = wrapper.shape
    else:
        raise CorruptFile(f"{where} is a ShardedTensor without a global size")

    dtype = "unknown"
    properties = metadata.field("tensor_properties")
    if isinstance(wrapper, WrapperSubclassRecord):
        dtype = wrapper.dtype
    elif isinstance(properties, PickledObject):
        if properties.pickle_args:
            dtype = str(properties.pickle_args[0])
        elif properties.field("dtype") is not None:
            dtype = str(properties.field("dtype"))

    local: list[LocalShard] = []
    for shard in local_shards or []:
        tensor = shard.field("tensor") if isinstance(shard, PickledObject) else None
        if not isinstance(tensor, TensorRecord):
            raise CorruptFile(f"{where} has a local shard without a tensor")
        local.append(LocalShard(_shard_box(shard.field("metadata"), where), tensor))
    return ShardedEntry(path=path, dtype=dtype, shape=shape, boxes=boxes, local=local)


def _is_sharded_tensor(value: Any) -> bool:
    return isinstance(value, PickledObject) and value.qualname == SHARDED_TENSOR


@dataclass
class RankTree:
    """The ShardedTensors and plain tensors of one parsed rank file, in pickle order."""

    rank: int
    file: str
    torch_file: TorchFile
    sharded: dict[tuple[str, ...], ShardedEntry] = field(default_factory=dict)
    plain: dict[tuple[str, ...], TensorRecord] = field(default_factory=dict)


def _walk(value: Any, path: tuple[str, ...], tree: RankTree, source: str) -> None:
    if _is_sharded_tensor(value):
        tree.sharded[path] = parse_sharded_tensor(value, path, source)
    elif isinstance(value, TensorRecord):
        tree.plain[path] = value
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, (*path, str(key)), tree, source)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _walk(item, (*path, str(index)), tree, source)


def parse_rank_file(path: Path, rank: int, file: str) -> RankTree:
    """Parse one rank file's pickle and collect its ShardedTensors under ``model`` and ``optim``.

    Raises:
        CorruptFile, UnsafePickle, UnsupportedFormat: with the file named.
    """
    torch_file = read_torch_file(path)
    value = torch_file.value
    if not isinstance(value, dict) or MODEL_KEY not in value:
        raise CorruptFile(
            f"{path}: the rank file has no '{MODEL_KEY}' entry, so it is not an OLMo "
            "torch_legacy rank file"
        )
    tree = RankTree(rank=rank, file=file, torch_file=torch_file)
    for key in (MODEL_KEY, OPTIM_KEY):
        if key in value:
            _walk(value[key], (key,), tree, str(path))
    return tree


@dataclass
class RankPlan:
    """Prediction of another rank file's shards, in pickle order, from the parsed file."""

    shards: list[tuple[ShardedEntry, ShardBox]]
    # True when every ShardedTensor places as many shards on this rank as on the parsed one,
    # so the rank's storage keys follow the parsed file's numbering.
    same_numbering: bool


def plan_rank(primary: RankTree, rank: int) -> RankPlan:
    """Predict which shards ``rank``'s file holds, from the parsed file's metadata."""
    shards: list[tuple[ShardedEntry, ShardBox]] = []
    same_numbering = True
    for entry in primary.sharded.values():
        boxes = [box for box in entry.boxes if box.rank == rank]
        if len(boxes) != len(entry.local):
            same_numbering = False
        shards.extend((entry, box) for box in boxes)
    return RankPlan(shards=shards, same_numbering=same_numbering)


def _unique_local_storages(primary: RankTree) -> bool:
    """Return True when each local shard of the parsed file has a storage of its own."""
    uses = Counter(
        local.tensor.storage.key for entry in primary.sharded.values() for local in entry.local
    )
    plain_keys = {tensor.storage.key for tensor in primary.plain.values()}
    return all(count == 1 for count in uses.values()) and not (set(uses) & plain_keys)


def _is_exact_storage(tensor: TensorRecord) -> bool:
    """Return True when ``tensor`` starts its storage, is C-contiguous and fills it exactly."""
    numel = 1
    for size in tensor.shape:
        numel *= size
    return (
        tensor.storage_offset == 0
        and tensor.stride == contiguous_stride(tensor.shape)
        and tensor.storage.numel * dtype_size(tensor.storage.dtype)
        == numel * dtype_size(tensor.dtype)
    )


@dataclass
class PieceData:
    """Location of one rank's piece of one ShardedTensor: zip entry name and stored bytes."""

    key: str | None
    data: StoredBytes | None


def name_list(names: Iterable[str]) -> str:
    """Join sorted, distinct tensor names for a problem sentence, with a count past the limit."""
    listed = sorted(set(names))
    shown = ", ".join(listed[:MAX_NAMES_IN_PROBLEM])
    if len(listed) > MAX_NAMES_IN_PROBLEM:
        shown += f" and {len(listed) - MAX_NAMES_IN_PROBLEM} more"
    return shown


class LegacyReader:
    """Builds the Checkpoint of one torch_legacy directory; see the module docstring."""

    def __init__(self, detection: Detection, deep: bool) -> None:
        self.detection = detection
        self.root = detection.path
        self.deep = deep
        self.problems: list[str] = []
        self.notes: list[str] = list(detection.notes)
        self.rank_files: dict[int, Path] = {}
        # (ShardedTensor path, rank, index among that rank's boxes) -> where the bytes are.
        self.piece_data: dict[tuple[tuple[str, ...], int, int], PieceData] = {}

    def read(self) -> Checkpoint:
        """Read the directory into a Checkpoint, raising InspectError when no rank file parses."""
        for path in self.root.iterdir():
            match = RANK_FILE.fullmatch(path.name)
            if match and path.is_file():
                self.rank_files[int(match.group(1))] = path
        primary = self._parse_primary()
        self._check_primary(primary)
        world_size = self._world_size(primary)
        for rank in range(world_size):
            if rank == primary.rank:
                continue
            path = self.rank_files.get(rank)
            if path is None:
                self._report_missing(primary, rank)
            elif self.deep:
                self._check_rank_deep(primary, rank, path)
            else:
                self._check_rank_directory(primary, rank, path)

        tensors, optimizer = self._build_tensors(primary)
        for tensor in [*tensors, *(optimizer.tensors if optimizer else [])]:
            if tensor.shards:
                self.problems += coverage_problems(tensor)

        value = primary.torch_file.value
        train_state = train_state_from_value(value, primary.file, skip=(MODEL_KEY, OPTIM_KEY))
        self._check_state_world_size(value, world_size, primary.file)

        checkpoint = checkpoint_from_detection(
            self.detection, CheckpointKind.OLMO_SHARDED_TORCH_LEGACY
        )
        checkpoint.tensors = tensors
        checkpoint.problems = self.problems
        checkpoint.notes = self.notes
        checkpoint.train_state = train_state
        checkpoint.optimizer = optimizer
        checkpoint.world_size = world_size
        checkpoint.files = self._files(checkpoint)
        checkpoint.details = {
            "parsed_rank_file": primary.file,
            "rank_files": len(self.rank_files),
            "other_ranks_checked_by": "pickle" if self.deep else "zip directory",
            "sharding": _sharding_summary(primary),
            "sharded_tensors": len(primary.sharded),
        }
        return checkpoint

    def _parse_primary(self) -> RankTree:
        """Parse the lowest-numbered readable rank file, because each one repeats all metadata."""
        if not self.rank_files:
            raise CorruptFile(f"{self.root}: no rank{{N}}.pt files; expected rank0.pt and up")
        last_error: InspectError | None = None
        for rank in sorted(self.rank_files):
            path = self.rank_files[rank]
            try:
                tree = parse_rank_file(path, rank, path.name)
            except InspectError as error:
                self.problems.append(f"{path.name} cannot be read: {error}")
                last_error = error
                continue
            if rank != 0:
                self.notes.append(f"the shard metadata was read from {path.name}")
            return tree
        assert last_error is not None
        raise type(last_error)(f"{self.root}: no rank file can be read; {last_error}")

    def _check_primary(self, primary: RankTree) -> None:
        self.problems += primary.torch_file.storage_problems()
        if primary.torch_file.unknown_globals:
            self.notes.append(
                f"{primary.file} names classes off the allow-list, shown as placeholders: "
                f"{', '.join(primary.torch_file.unknown_globals)}"
            )
        self._check_local_shards(primary, primary)

        try:
            rank_zip = read_rank_zip(self.rank_files[primary.rank])
        except InspectError as error:
            self.problems.append(str(error))
            rank_zip = RankZip(prefix=Path(primary.file).stem, locations={})
        self._check_archive_name(primary.rank, primary.file, rank_zip)
        self._record_tree_data(primary, rank_zip)

    def _check_archive_name(self, rank: int, file: str, rank_zip: RankZip) -> None:
        # torch.save names the zip's folder after the file it writes, so a copied file keeps
        # the folder name of the rank it was written for.
        match = ARCHIVE_RANK.fullmatch(rank_zip.prefix)
        if match and int(match.group(1)) != rank:
            self.problems.append(
                f"{file} was written as {rank_zip.prefix}.pt (its zip folder is "
                f"{rank_zip.prefix}/), so it holds rank {match.group(1)}'s shards, not rank "
                f"{rank}'s; restore {file} from the original checkpoint"
            )

    def _check_local_shards(self, expected_from: RankTree, tree: RankTree) -> None:
        """Compare ``tree``'s local shards with the boxes ``expected_from`` places on its rank."""
        wrong: list[str] = []
        for path, entry in tree.sharded.items():
            reference = expected_from.sharded.get(path)
            expected = [box for box in (reference or entry).boxes if box.rank == tree.rank]
            found = [local.box for local in entry.local]
            shapes_ok = all(local.tensor.shape == local.box.sizes for local in entry.local)
            if reference is None or found != expected or not shapes_ok:
                wrong.append(_tensor_name(path))
        if wrong:
            self.problems.append(
                f"{tree.file} holds local shards that do not match the shard metadata for rank "
                f"{tree.rank} (placement, offsets or sizes): {name_list(wrong)}; the file belongs "
                "to another rank or checkpoint"
            )

    def _world_size(self, primary: RankTree) -> int:
        """Return the world size the shard placements give (the rank files when none)."""
        placed = {box.rank for entry in primary.sharded.values() for box in entry.boxes}
        if not placed:
            return max(self.rank_files) + 1
        world_size = max(placed) + 1
        extra = sorted(rank for rank in self.rank_files if rank >= world_size)
        if extra:
            self.problems.append(
                f"{_rank_list(set(extra))} exist but the shard metadata places shards on "
                f"{world_size} ranks only; they belong to another checkpoint"
            )
        return world_size

    def _check_state_world_size(self, value: Any, world_size: int, file: str) -> None:
        stated = value.get("world_size") if isinstance(value, dict) else None
        if isinstance(stated, int) and stated != world_size:
            self.problems.append(
                f"{file} stores world_size {stated}, but the rank files and shard metadata "
                f"give {world_size}"
            )

    def _report_missing(self, primary: RankTree, rank: int) -> None:
        plan = plan_rank(primary, rank)
        held = [_tensor_name(entry.path) for entry, box in plan.shards if box.numel > 0]
        what = f"it holds pieces of {name_list(held)}" if held else "it holds no shard"
        self.problems.append(
            f"rank{rank}.pt is missing: {what}; copy it from the run's save folder"
        )

    def _record_tree_data(self, tree: RankTree, rank_zip: RankZip) -> None:
        for entry in tree.sharded.values():
            for index, local in enumerate(entry.local):
                self.piece_data[(entry.path, tree.rank, index)] = PieceData(
                    key=rank_zip.entry(local.tensor.storage.key),
                    data=tree.torch_file.stored_bytes(local.tensor, tree.file),
                )

    def _check_rank_deep(self, primary: RankTree, rank: int, path: Path) -> None:
        try:
            tree = parse_rank_file(path, rank, path.name)
            rank_zip = read_rank_zip(path)
        except InspectError as error:
            self.problems.append(f"{path.name} cannot be read: {error}")
            return
        self.problems += tree.torch_file.storage_problems()
        self._check_archive_name(rank, path.name, rank_zip)
        self._check_local_shards(primary, tree)

        changed = [
            _tensor_name(key)
            for key, entry in primary.sharded.items()
            if key not in tree.sharded
            or tree.sharded[key].boxes != entry.boxes
            or tree.sharded[key].shape != entry.shape
        ]
        if changed:
            self.problems.append(
                f"{path.name} and {primary.file} disagree on the shard metadata of "
                f"{name_list(changed)}; the files come from different checkpoints"
            )
        self._check_step(primary, tree)
        self._record_tree_data(tree, rank_zip)

    def _check_step(self, primary: RankTree, tree: RankTree) -> None:
        ours = primary.torch_file.value.get("global_step")
        theirs = tree.torch_file.value.get("global_step")
        if ours != theirs:
            self.problems.append(
                f"{tree.file} is from global_step {theirs}, {primary.file} from {ours}; "
                "the rank files come from different checkpoints"
            )

    def _check_rank_directory(self, primary: RankTree, rank: int, path: Path) -> None:
        """Check a rank file through its zip directory against the parsed file's prediction."""
        try:
            rank_zip = read_rank_zip(path)
        except InspectError as error:
            self.problems.append(f"{path.name} cannot be read: {error}")
            return
        self._check_archive_name(rank, path.name, rank_zip)

        plan = plan_rank(primary, rank)
        certain = (
            plan.same_numbering
            and _unique_local_storages(primary)
            and len(rank_zip.locations) == len(primary.torch_file.storages)
        )
        if certain:
            self._check_predicted_entries(primary, rank, path.name, rank_zip)
        else:
            self._check_entry_sizes(plan, rank, path.name, rank_zip)

    def _check_predicted_entries(
        self, primary: RankTree, rank: int, file: str, rank_zip: RankZip
    ) -> None:
        """Check ``rank``'s storage entries, numbered as in the parsed file, against its pieces."""
        short: list[str] = []
        for entry in primary.sharded.values():
            boxes = [box for box in entry.boxes if box.rank == rank]
            for index, (box, model) in enumerate(zip(boxes, entry.local, strict=True)):
                key = model.tensor.storage.key
                needed = box.numel * dtype_size(model.tensor.dtype)
                location = rank_zip.locations.get(key)
                if location is None or location.nbytes < needed:
                    short.append(_tensor_name(entry.path))
                    continue

                exact = _is_exact_storage(model.tensor) and location.nbytes == needed
                data = StoredBytes(
                    file=file,
                    key=key,
                    dtype=model.tensor.dtype,
                    data_start=location.data_start if exact else None,
                    storage_nbytes=location.nbytes,
                    storage_offset=0,
                    stride=contiguous_stride(box.sizes) if exact else None,
                )
                self.piece_data[(entry.path, rank, index)] = PieceData(rank_zip.entry(key), data)
        if short:
            self.problems.append(
                f"{file} lacks the bytes of its pieces of {name_list(short)} (storage entries "
                "missing or shorter than the shard sizes); re-copy it from its source"
            )

    def _check_entry_sizes(self, plan: RankPlan, rank: int, file: str, rank_zip: RankZip) -> None:
        """Check that ``rank``'s zip has an entry large enough for each predicted piece."""
        self.notes.append(
            f"{file}: its storage numbering differs from the parsed file's, so its pieces' "
            "byte offsets are unknown until it is read with --deep"
        )
        available = sorted(location.nbytes for location in rank_zip.locations.values())
        needed = sorted(
            (
                (box.numel * dtype_size(entry.dtype), _tensor_name(entry.path))
                for entry, box in plan.shards
            ),
            reverse=True,
        )
        short: list[str] = []
        for nbytes, name in needed:
            position = next((i for i, size in enumerate(available) if size >= nbytes), None)
            if position is None:
                short.append(name)
            else:
                available.pop(position)
        if short:
            self.problems.append(
                f"{file} has no storage entry large enough for its pieces of {name_list(short)}; "
                "re-copy it from its source"
            )

    def _build_tensors(self, primary: RankTree) -> tuple[list[TensorInfo], OptimizerInfo | None]:
        tensors: list[TensorInfo] = []
        optimizer_tensors: list[TensorInfo] = []
        state_keys: set[str] = set()

        for path, entry in primary.sharded.items():
            info = self._sharded_info(entry)
            if path[0] == MODEL_KEY:
                tensors.append(info)
            else:
                optimizer_tensors.append(info)
                state_keys.add(path[-1])
        for path, record in primary.plain.items():
            info = TensorInfo(
                name=_tensor_name(path),
                shape=record.shape,
                dtype=record.dtype,
                file=primary.file,
                stored_key=_stored_key(path),
                data=primary.torch_file.stored_bytes(record, primary.file),
            )
            if path[0] == MODEL_KEY:
                tensors.append(info)
            else:
                optimizer_tensors.append(info)
                state_keys.add(path[-1])

        optim = primary.torch_file.value.get(OPTIM_KEY)
        if not isinstance(optim, dict):
            return tensors, None
        optimizer = OptimizerInfo(
            kind=OPTIMIZER_KIND,
            param_groups=param_group_fields(optim.get("param_groups")),
            state_keys=sorted(state_keys),
            tensors=optimizer_tensors,
            files=[f"rank{rank}.pt" for rank in sorted(self.rank_files)],
        )
        return tensors, optimizer

    def _sharded_info(self, entry: ShardedEntry) -> TensorInfo:
        pieces: list[ShardPiece] = []
        seen: Counter[int] = Counter()
        for box in entry.boxes:
            index = seen[box.rank]
            seen[box.rank] += 1
            found = self.piece_data.get((entry.path, box.rank, index), PieceData(None, None))
            pieces.append(
                ShardPiece(
                    rank=box.rank,
                    file=f"rank{box.rank}.pt",
                    key=found.key,
                    numel=box.numel,
                    offsets=box.offsets,
                    shape=box.sizes,
                    data=found.data,
                )
            )
        files = {piece.file for piece in pieces}
        return TensorInfo(
            name=_tensor_name(entry.path),
            shape=entry.shape,
            dtype=entry.dtype,
            file=files.pop() if len(files) == 1 else None,
            stored_key=_stored_key(entry.path),
            shards=pieces,
        )

    def _files(self, checkpoint: Checkpoint) -> list[FileInfo]:
        roles = {CONFIG_YAML: "config"}
        roles.update({path.name: MODEL_KEY for path in self.rank_files.values()})
        counts = pieces_per_file(checkpoint)
        infos = list_checkpoint_files(self.root, roles)
        for info in infos:
            match = RANK_FILE.fullmatch(info.path)
            if match:
                info.rank = int(match.group(1))
            info.tensors = counts.get(info.path, 0)
        return infos


def pieces_per_file(checkpoint: Checkpoint) -> Counter[str]:
    """Count the model and optimizer tensors or shard pieces stored in each file."""
    counts: Counter[str] = Counter()
    optimizer_tensors = checkpoint.optimizer.tensors if checkpoint.optimizer else []
    for tensor in [*checkpoint.tensors, *optimizer_tensors]:
        if tensor.shards:
            counts.update(piece.file for piece in tensor.shards)
        elif tensor.file is not None:
            counts[tensor.file] += 1
    return counts


def _tensor_name(path: tuple[str, ...]) -> str:
    """Name a tensor: model keys as stored, optimizer state as ``<param>.<state key>``."""
    if path[0] == MODEL_KEY:
        return strip_fsdp_wrappers(".".join(path[1:]))
    if len(path) >= 4 and path[1] == "state":
        return strip_fsdp_wrappers(".".join(path[2:]))
    return strip_fsdp_wrappers(".".join(path[1:]))


def _stored_key(path: tuple[str, ...]) -> str | None:
    stored = ".".join(path[1:])
    return stored if stored != _tensor_name(path) else None


def param_group_fields(groups: Any) -> list[dict[str, Any]]:
    """Return each optimizer param group's settings (lr, betas, ...) for display."""
    if not isinstance(groups, list):
        return []
    return [param_group_summary(group) for group in groups if isinstance(group, dict)]


def _rank_list(ranks: set[int]) -> str:
    listed = sorted(ranks)
    if listed and listed == list(range(listed[0], listed[-1] + 1)) and len(listed) > 2:
        return f"rank{listed[0]}.pt to rank{listed[-1]}.pt"
    return ", ".join(f"rank{rank}.pt" for rank in listed) or "none"


def _sharding_summary(primary: RankTree) -> str:
    dims: Counter[str] = Counter()
    for entry in primary.sharded.values():
        split = [
            dim
            for dim in range(len(entry.shape))
            if any(box.sizes[dim] != entry.shape[dim] for box in entry.boxes if box.numel)
        ]
        dims[", ".join(str(dim) for dim in split) or "none"] += 1
    parts = [f"split along dim {dim}: {count} tensors" for dim, count in sorted(dims.items())]
    return "; ".join(parts)


def read(detection: Detection, *, deep: bool = False) -> Checkpoint:
    """Read a torch_legacy checkpoint directory as metadata.

    With ``deep`` every rank file's pickle is parsed and checked. Otherwise only the first
    readable rank file is parsed, and the others are checked through their zip directories.

    Raises:
        InspectError: no rank file can be read (the one-line message names the last one).
    """
    return LegacyReader(detection, deep).read()
