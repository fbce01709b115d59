"""Reader for OLMo's ``local`` sharded checkpoints: FSDP flat-parameter shards, one file per rank.

Layout: ``metadata.yaml`` (``world_size``), ``model/rank{N}.pt`` holding
``{"modules": [{"name", "handles": [{"flat_param.data", "flat_param._fqns", ...}]}]}``,
``optim/rank{N}.pt`` (the rank's ``optimizer.state_dict()``, state keyed by parameter id) and
``train/rank{N}.pt`` (trainer state). Each rank's flat-parameter metadata is stored only in its
own file, so every ``model`` and ``optim`` rank file is parsed, and ``train/rank0.pt`` gives the
trainer state. The reader uses metadata only. It never imports torch or reads tensor bytes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from olmo_inspect.detect import Detection
from olmo_inspect.errors import CorruptFile, InspectError
from olmo_inspect.formats.common import (
    CONFIG_YAML,
    checkpoint_from_detection,
    list_checkpoint_files,
    read_text_file,
    read_train_state,
)
from olmo_inspect.formats.coverage import coverage_problems
from olmo_inspect.formats.fsdp_flat import (
    ParamSlice,
    join_name,
    slices_from_offsets,
    slices_from_param_infos,
    strip_fsdp_wrappers,
)
from olmo_inspect.formats.optimizer import param_names_by_id
from olmo_inspect.formats.torch_legacy import (
    MAX_NAMES_IN_PROBLEM,
    RankZip,
    name_list,
    param_group_fields,
    pieces_per_file,
    read_rank_zip,
)
from olmo_inspect.io.torch_file import TorchFile, read_torch_file
from olmo_inspect.io.unpickler import TensorRecord
from olmo_inspect.model import (
    Checkpoint,
    CheckpointKind,
    FileInfo,
    OptimizerInfo,
    ShardPiece,
    StoredBytes,
    TensorInfo,
    TrainState,
)

log = logging.getLogger(__name__)

METADATA_YAML = "metadata.yaml"
MODEL_DIR = "model"
OPTIM_DIR = "optim"
TRAIN_DIR = "train"
RANK_FILE = re.compile(r"rank(\d+)\.pt")

# Handle keys, as OLMo writes them (with the ``flat_param.`` prefix) or bare.
FLAT_PARAM_PREFIX = "flat_param."
DATA_KEY = "flat_param.data"

OPTIMIZER_KIND = "FSDP flat-parameter shards per rank (state keyed by parameter id)"


def _handle_field(handle: dict[str, Any], name: str) -> Any:
    if FLAT_PARAM_PREFIX + name in handle:
        return handle[FLAT_PARAM_PREFIX + name]
    return handle.get(name)


@dataclass
class FlatShard:
    """One FSDP handle (flat parameter) as one rank stores it."""

    module_index: int
    handle_index: int
    module: str
    fqns: list[str]
    shapes: list[tuple[int, ...]]
    data: TensorRecord
    slices: list[ParamSlice | None]
    padded: int = 0

    @property
    def names(self) -> list[str]:
        return [join_name(self.module, fqn) for fqn in self.fqns]


def parse_flat_shards(torch_file: TorchFile, source: str) -> list[FlatShard]:
    """Read the flat-parameter handles of one ``model/rank{N}.pt``.

    Raises:
        CorruptFile: the tree is not OLMo's ``{"modules": [...]}`` layout.
    """
    value = torch_file.value
    modules = value.get("modules") if isinstance(value, dict) else None
    if not isinstance(modules, list):
        raise CorruptFile(f"{source}: no 'modules' list, so not an OLMo local model rank file")

    shards: list[FlatShard] = []
    for module_index, module in enumerate(modules):
        if not isinstance(module, dict) or not isinstance(module.get("handles"), list):
            raise CorruptFile(f"{source}: modules[{module_index}] has no 'handles' list")
        name = str(module.get("name") or "")
        for handle_index, handle in enumerate(module["handles"]):
            where = f"{source}: modules[{module_index}].handles[{handle_index}]"
            if not isinstance(handle, dict):
                raise CorruptFile(f"{where} is not a dict")
            shards.append(_flat_shard(handle, module_index, handle_index, name, where))
    return shards


def _flat_shard(
    handle: dict[str, Any], module_index: int, handle_index: int, module: str, where: str
) -> FlatShard:
    data = handle.get(DATA_KEY)
    fqns = _handle_field(handle, "_fqns")
    shapes = _handle_field(handle, "_shapes")
    if not isinstance(data, TensorRecord):
        raise CorruptFile(f"{where} has no {DATA_KEY} tensor")
    if not isinstance(fqns, (list, tuple)) or not isinstance(shapes, (list, tuple)):
        raise CorruptFile(f"{where} has no _fqns/_shapes")
    if len(fqns) != len(shapes):
        raise CorruptFile(f"{where} lists {len(fqns)} _fqns but {len(shapes)} _shapes")

    infos = _handle_field(handle, "_shard_param_infos")
    if infos is not None:
        slices = slices_from_param_infos(infos, where)
    else:
        # torch <= 2.0.1 wrote the shard as index and offset ranges instead.
        slices = slices_from_offsets(
            _handle_field(handle, "_shard_indices"),
            _handle_field(handle, "_shard_param_offsets"),
            len(fqns),
            where,
        )
    if len(slices) != len(fqns):
        raise CorruptFile(f"{where} has {len(slices)} shard infos for {len(fqns)} parameters")

    padded = _handle_field(handle, "_shard_numel_padded")
    return FlatShard(
        module_index=module_index,
        handle_index=handle_index,
        module=module,
        fqns=[str(fqn) for fqn in fqns],
        shapes=[tuple(int(x) for x in shape) for shape in shapes],
        data=data,
        slices=slices,
        padded=padded if isinstance(padded, int) else 0,
    )


@dataclass
class RankModel:
    """One parsed ``model/rank{N}.pt``."""

    rank: int
    file: str
    torch_file: TorchFile
    zip: RankZip
    shards: list[FlatShard]


@dataclass
class ParamPlacement:
    """A model parameter's TensorInfo and its flat pieces by rank."""

    info: TensorInfo
    slices: dict[int, ParamSlice] = field(default_factory=dict)


def _rank_files(folder: Path) -> dict[int, Path]:
    files: dict[int, Path] = {}
    if not folder.is_dir():
        return files
    for path in folder.iterdir():
        match = RANK_FILE.fullmatch(path.name)
        if match and path.is_file():
            files[int(match.group(1))] = path
    return files


class LocalReader:
    """Builds the Checkpoint of one ``local`` directory; see the module docstring."""

    def __init__(self, detection: Detection, deep: bool) -> None:
        self.detection = detection
        self.root = detection.path
        self.deep = deep
        self.problems: list[str] = []
        self.notes: list[str] = list(detection.notes)

    def read(self) -> Checkpoint:
        """Read the directory into a Checkpoint; raises InspectError when no model file parses."""
        model_files = _rank_files(self.root / MODEL_DIR)
        world_size = self._world_size(model_files)
        ranks = self._read_model_ranks(model_files, world_size)
        if not ranks:
            raise CorruptFile(
                f"{self.root / MODEL_DIR}: no model rank file can be read; "
                + (self.problems[-1] if self.problems else "expected model/rank0.pt and up")
            )

        placements = self._build_model(ranks, world_size)
        tensors = [placement.info for placement in placements.values()]
        for tensor in tensors:
            self.problems += coverage_problems(tensor)
        optimizer = self._read_optimizer(placements, world_size)
        train_state = self._read_train_state(world_size)

        checkpoint = checkpoint_from_detection(self.detection, CheckpointKind.OLMO_SHARDED_LOCAL)
        checkpoint.tensors = tensors
        checkpoint.problems = self.problems
        checkpoint.notes = self.notes
        checkpoint.train_state = train_state
        checkpoint.optimizer = optimizer
        checkpoint.world_size = world_size
        checkpoint.files = self._files(checkpoint)
        checkpoint.details = {"flat_params": _flat_param_details(ranks[0].shards)}
        return checkpoint

    def _world_size(self, model_files: dict[int, Path]) -> int:
        """Return ``world_size`` from metadata.yaml (the model rank files when it is unreadable)."""
        path = self.root / METADATA_YAML
        fallback = max(model_files) + 1 if model_files else 1
        try:
            value = yaml.safe_load(read_text_file(path))
        except (InspectError, yaml.YAMLError) as error:
            self.problems.append(
                f"{METADATA_YAML} cannot be read ({str(error).splitlines()[0]}); "
                f"assuming world size {fallback} from the model rank files"
            )
            return fallback

        stated = value.get("world_size") if isinstance(value, dict) else None
        if not isinstance(stated, int) or isinstance(stated, bool) or stated < 1:
            self.problems.append(
                f"{METADATA_YAML} has no positive integer world_size; assuming world size "
                f"{fallback} from the model rank files"
            )
            return fallback
        return stated

    def _read_model_ranks(self, model_files: dict[int, Path], world_size: int) -> list[RankModel]:
        extra = sorted(rank for rank in model_files if rank >= world_size)
        if extra:
            self.problems.append(
                f"{MODEL_DIR}/ has rank files beyond world_size {world_size} "
                f"({', '.join(f'rank{rank}.pt' for rank in extra)}); they belong to another "
                "checkpoint"
            )

        ranks: list[RankModel] = []
        for rank in range(world_size):
            path = model_files.get(rank)
            file = f"{MODEL_DIR}/rank{rank}.pt"
            if path is None:
                self.problems.append(f"{file} is missing; its pieces of every tensor are lost")
                continue
            try:
                torch_file = read_torch_file(path)
                rank_zip = read_rank_zip(path)
                shards = parse_flat_shards(torch_file, file)
            except InspectError as error:
                self.problems.append(f"{file} cannot be read: {error}")
                continue
            self.problems += torch_file.storage_problems()
            self._check_archive_name(rank, file, rank_zip)
            ranks.append(RankModel(rank, file, torch_file, rank_zip, shards))
        return ranks

    def _check_archive_name(self, rank: int, file: str, rank_zip: RankZip) -> None:
        # torch.save names the zip's folder after the file it writes, so a copied file keeps
        # the folder name of the rank it was written for.
        match = re.fullmatch(r"rank(\d+)", rank_zip.prefix)
        if match and int(match.group(1)) != rank:
            self.problems.append(
                f"{file} was written as {rank_zip.prefix}.pt (its zip folder is "
                f"{rank_zip.prefix}/), so it holds rank {match.group(1)}'s shards, not rank "
                f"{rank}'s; restore {file} from the original checkpoint"
            )

    def _build_model(self, ranks: list[RankModel], world_size: int) -> dict[str, ParamPlacement]:
        reference = ranks[0]
        placements: dict[str, ParamPlacement] = {}
        for shard in reference.shards:
            for name, fqn, shape in zip(shard.names, shard.fqns, shard.shapes, strict=True):
                stored = f"{shard.module}.{fqn}" if shard.module else fqn
                placements[name] = ParamPlacement(
                    TensorInfo(
                        name=name,
                        shape=shape,
                        dtype=shard.data.dtype,
                        file=None,
                        stored_key=stored if stored != name else None,
                    )
                )

        for rank in ranks:
            if not self._same_layout(reference, rank):
                continue
            for shard in rank.shards:
                self._add_pieces(rank, shard, placements)
        return placements

    def _same_layout(self, reference: RankModel, rank: RankModel) -> bool:
        layout = [(shard.module, shard.fqns, shard.shapes) for shard in rank.shards]
        expected = [(shard.module, shard.fqns, shard.shapes) for shard in reference.shards]
        if layout == expected:
            return True
        self.problems.append(
            f"{rank.file} and {reference.file} wrap different modules or parameters; "
            f"{rank.file} belongs to another checkpoint, so its pieces are left out"
        )
        return False

    def _add_pieces(
        self, rank: RankModel, shard: FlatShard, placements: dict[str, ParamPlacement]
    ) -> None:
        data_numel = shard.data.shape[0] if len(shard.data.shape) == 1 else 0
        outside: list[str] = []
        for name, piece in zip(shard.names, shard.slices, strict=True):
            if piece is None:
                continue
            if piece.offset_in_shard + piece.numel > data_numel:
                outside.append(name)
            placement = placements[name]
            placement.slices[rank.rank] = piece
            placement.info.shards.append(
                ShardPiece(
                    rank=rank.rank,
                    file=rank.file,
                    key=rank.zip.entry(shard.data.storage.key),
                    numel=piece.numel,
                    flat_range=(piece.start, piece.end),
                    data=_piece_bytes(rank.torch_file, shard.data, piece, rank.file),
                )
            )
        if outside:
            self.problems.append(
                f"{rank.file}: the pieces of {name_list(outside)} run past the "
                f"{data_numel}-element flat parameter of module {shard.module!r}"
            )

    def _read_optimizer(
        self, placements: dict[str, ParamPlacement], world_size: int
    ) -> OptimizerInfo | None:
        optim_files = _rank_files(self.root / OPTIM_DIR)
        if not optim_files:
            self.notes.append(f"no {OPTIM_DIR}/rank{{N}}.pt files: the optimizer state is absent")
            return None

        builder = OptimizerBuilder(placements)
        groups: Any = None
        for rank in range(world_size):
            file = f"{OPTIM_DIR}/rank{rank}.pt"
            path = optim_files.get(rank)
            if path is None:
                self.problems.append(f"{file} is missing; its optimizer state pieces are lost")
                continue
            try:
                torch_file = read_torch_file(path)
                rank_zip = read_rank_zip(path)
            except InspectError as error:
                self.problems.append(f"{file} cannot be read: {error}")
                continue
            value = torch_file.value
            if not isinstance(value, dict) or not isinstance(value.get("state"), dict):
                self.problems.append(f"{file} has no optimizer 'state' dict")
                continue
            self.problems += torch_file.storage_problems()
            self._check_archive_name(rank, file, rank_zip)
            if groups is None:
                groups = value.get("param_groups")
            builder.add_rank(rank, file, torch_file, rank_zip, value)

        tensors = builder.tensors()
        self.problems += builder.problems
        for tensor in tensors:
            if tensor.shards:
                self.problems += coverage_problems(tensor)
        if builder.unresolved:
            shown = sorted(builder.unresolved)[:MAX_NAMES_IN_PROBLEM]
            self.notes.append(
                "optimizer state of parameter ids "
                f"{', '.join(str(index) for index in shown)} "
                "matches no model parameter by its param_groups name; shown as 1-D tensors made "
                "of the ranks' pieces in rank order"
            )
        return OptimizerInfo(
            kind=OPTIMIZER_KIND,
            param_groups=param_group_fields(groups),
            state_keys=sorted(builder.state_keys),
            tensors=tensors,
            files=[f"{OPTIM_DIR}/{path.name}" for _, path in sorted(optim_files.items())],
        )

    def _read_train_state(self, world_size: int) -> TrainState | None:
        train_files = _rank_files(self.root / TRAIN_DIR)
        if not train_files:
            self.notes.append(f"no {TRAIN_DIR}/rank{{N}}.pt files: the trainer state is absent")
            return None
        missing = [rank for rank in range(world_size) if rank not in train_files]
        if missing:
            self.problems.append(
                "trainer state files are missing: "
                + ", ".join(f"{TRAIN_DIR}/rank{rank}.pt" for rank in missing[:MAX_NAMES_IN_PROBLEM])
            )

        rank = min(train_files)
        try:
            state, _ = read_train_state(train_files[rank], self.root)
        except InspectError as error:
            self.problems.append(f"{TRAIN_DIR}/rank{rank}.pt cannot be read: {error}")
            return None
        stated = state.fields.get("world_size")
        if isinstance(stated, int) and stated != world_size:
            self.problems.append(
                f"{state.file} stores world_size {stated}, but {METADATA_YAML} says {world_size}"
            )
        return state

    def _files(self, checkpoint: Checkpoint) -> list[FileInfo]:
        roles = {CONFIG_YAML: "config", METADATA_YAML: "metadata"}
        counts = pieces_per_file(checkpoint)
        infos = list_checkpoint_files(self.root, roles)
        for info in infos:
            folder, _, name = info.path.rpartition("/")
            match = RANK_FILE.fullmatch(name)
            if match and folder in (MODEL_DIR, OPTIM_DIR, TRAIN_DIR):
                info.role = folder
                info.rank = int(match.group(1))
            info.tensors = counts.get(info.path, 0)
        return infos


def _piece_bytes(
    torch_file: TorchFile, flat: TensorRecord, piece: ParamSlice, file: str
) -> StoredBytes:
    """Point into the flat parameter's storage at the piece's first element."""
    stored = torch_file.stored_bytes(flat, file)
    step = flat.stride[0] if flat.stride else 1
    return StoredBytes(
        file=stored.file,
        key=stored.key,
        dtype=stored.dtype,
        data_start=stored.data_start,
        storage_nbytes=stored.storage_nbytes,
        storage_offset=stored.storage_offset + piece.offset_in_shard * step,
        stride=(step,),
    )


@dataclass(frozen=True)
class OptimizerPiece:
    """One rank's stored state tensor of one parameter."""

    rank: int
    file: str
    entry: str
    record: TensorRecord
    data: StoredBytes

    @property
    def numel(self) -> int:
        return _numel(self.record.shape)


class OptimizerBuilder:
    """Collects each rank's optimizer state into tensors of the unsharded parameters.

    A state tensor of a parameter id is a flat piece of that parameter and covers the same
    elements as the rank's model piece of it. 0-d tensors (``step``) are the same on every rank,
    so they are listed once, from the lowest rank that stores them.
    """

    def __init__(self, placements: dict[str, ParamPlacement]) -> None:
        self.placements = placements
        self.names: dict[int, str] = {}
        self.state_keys: set[str] = set()
        self.problems: list[str] = []
        self.unresolved: set[int] = set()
        # Keyed by (param id, state key): the flat pieces of each rank, and the 0-d tensors.
        self.pieces: dict[tuple[int, str], list[OptimizerPiece]] = {}
        self.scalars: dict[tuple[int, str], OptimizerPiece] = {}

    def add_rank(
        self, rank: int, file: str, torch_file: TorchFile, rank_zip: RankZip, value: dict[str, Any]
    ) -> None:
        """Add one ``optim/rank{N}.pt``'s state tensors and learn its parameter names."""
        for param_id, name in param_names_by_id(value.get("param_groups") or []).items():
            if isinstance(param_id, int):
                self.names.setdefault(param_id, strip_fsdp_wrappers(name))

        for param_id, state in value["state"].items():
            if not isinstance(state, dict) or not isinstance(param_id, int):
                continue
            for key, item in state.items():
                self.state_keys.add(str(key))
                if not isinstance(item, TensorRecord):
                    continue
                piece = OptimizerPiece(
                    rank=rank,
                    file=file,
                    entry=rank_zip.entry(item.storage.key),
                    record=item,
                    data=torch_file.stored_bytes(item, file),
                )
                if item.shape:
                    self.pieces.setdefault((param_id, str(key)), []).append(piece)
                else:
                    self.scalars.setdefault((param_id, str(key)), piece)

    def tensors(self) -> list[TensorInfo]:
        """Return one TensorInfo per (parameter, state key), in parameter id order."""
        tensors: list[TensorInfo] = []
        for param_id, key in sorted({*self.pieces, *self.scalars}):
            name = self.names.get(param_id)
            scalar = self.scalars.get((param_id, key))
            if scalar is None:
                tensors.append(self._sharded_tensor(param_id, key, name))
                continue
            tensors.append(
                TensorInfo(
                    name=f"{name if name is not None else param_id}.{key}",
                    shape=scalar.record.shape,
                    dtype=scalar.record.dtype,
                    file=scalar.file,
                    stored_key=f"state.{param_id}.{key}",
                    data=scalar.data,
                )
            )
        return tensors

    def _sharded_tensor(self, param_id: int, key: str, name: str | None) -> TensorInfo:
        pieces = sorted(self.pieces[(param_id, key)], key=lambda piece: piece.rank)
        placement = self.placements.get(name) if name is not None else None
        if placement is None:
            return self._unresolved_tensor(param_id, key, name, pieces)

        shards = []
        for piece in pieces:
            model_piece = placement.slices.get(piece.rank)
            if model_piece is None or model_piece.numel != piece.numel:
                self.problems.append(
                    f"{piece.file}: {name}.{key} holds {piece.numel} elements, but the rank's "
                    f"model piece of {name} holds {model_piece.numel if model_piece else 0}"
                )
                continue
            shards.append(
                ShardPiece(
                    rank=piece.rank,
                    file=piece.file,
                    key=piece.entry,
                    numel=piece.numel,
                    flat_range=(model_piece.start, model_piece.end),
                    data=piece.data,
                )
            )
        return TensorInfo(
            name=f"{name}.{key}",
            shape=placement.info.shape,
            dtype=pieces[0].record.dtype,
            file=None,
            stored_key=f"state.{param_id}.{key}",
            shards=shards,
        )

    def _unresolved_tensor(
        self, param_id: int, key: str, name: str | None, pieces: list[OptimizerPiece]
    ) -> TensorInfo:
        # NOTE: without a matching parameter the original shape is unknown. FSDP gives each
        # rank a contiguous slice in rank order, so the pieces concatenate to the flat parameter.
        self.unresolved.add(param_id)
        shards = []
        position = 0
        for piece in pieces:
            shards.append(
                ShardPiece(
                    rank=piece.rank,
                    file=piece.file,
                    key=piece.entry,
                    numel=piece.numel,
                    flat_range=(position, position + piece.numel),
                    data=piece.data,
                )
            )
            position += piece.numel
        return TensorInfo(
            name=f"{name if name is not None else param_id}.{key}",
            shape=(position,),
            dtype=pieces[0].record.dtype,
            file=None,
            stored_key=f"state.{param_id}.{key}",
            shards=shards,
        )


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _flat_param_details(shards: list[FlatShard]) -> list[dict[str, Any]]:
    return [
        {
            "module": shard.module,
            "fqns": shard.fqns,
            "shapes": [list(shape) for shape in shard.shapes],
            "numels": [_numel(shape) for shape in shard.shapes],
        }
        for shard in shards
    ]


def read(detection: Detection, *, deep: bool = False) -> Checkpoint:
    """Read a ``local`` checkpoint directory as metadata.

    Every model and optimizer rank file is parsed whatever the value of ``deep``, because each
    rank's shard layout is stored only in its own files.

    Raises:
        InspectError: no model rank file can be read.
    """
    return LocalReader(detection, deep).read()
