"""Reader for OLMo ``olmo_core`` sharded checkpoints, written by olmo_core 0.1's ``Checkpointer``.

The layout: ``config.yaml``; ``model/metadata.json`` with ``model/rank_{N}.safetensors``;
``optim/metadata.json`` with ``optim/rank_{N}.safetensors``; ``train/rank{N}.pt``.
``metadata.json`` is ``{"tensors": {key: {shape, is_sharded, dtype, shard_spec_per_file:
{"rank_N.safetensors": {flattened_offsets, local_shape, global_offset}}}}}``. Each rank file
stores one 1-D tensor per key under the same key: the concatenation of that rank's
``flattened_offsets`` ranges in order, or the row-major flattening of a ``local_shape`` box at
``global_offset``. An empty ``[0, 0]`` range is backed by a shape-``[0]`` tensor. Optimizer keys
are ``state.<fqn>.__<key>``, ``num_param_groups``, ``param_group{i}`` and ``state_keys``; the
last two are pickled bytes, read under :data:`MAX_PICKLED_VALUE_BYTES` through the restricted
unpickler. Everything else is read from the safetensors headers only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_inspect.errors import CorruptFile, IncompleteCheckpoint, InspectError
from olmo_inspect.formats.common import checkpoint_from_detection, relative_path, to_json_value
from olmo_inspect.formats.coverage import coverage_problems
from olmo_inspect.formats.dcp import (
    MAX_NAMES_IN_PROBLEM,
    add_train_state,
    checkpoint_files,
    clean_name,
    file_record,
    train_files,
    train_rank_problems,
)
from olmo_inspect.formats.optimizer import param_group_summary
from olmo_inspect.io.safetensors_header import (
    SAFETENSORS_DTYPES,
    SafetensorsEntry,
    SafetensorsHeader,
    read_safetensors_header,
)
from olmo_inspect.io.unpickler import unpickle
from olmo_inspect.model import (
    DTYPE_SIZES,
    Checkpoint,
    CheckpointKind,
    FileInfo,
    OptimizerInfo,
    ShardPiece,
    StoredBytes,
    TensorInfo,
    contiguous_stride,
)

if TYPE_CHECKING:
    from olmo_inspect.detect import Detection

log = logging.getLogger(__name__)

MODEL_DIR = "model"
OPTIM_DIR = "optim"
METADATA_JSON = "metadata.json"
RANK_FILE = re.compile(r"^rank_(\d+)\.safetensors$")
STATE_PREFIX = "state."
STATE_KEY_MARKER = ".__"
PARAM_GROUP_KEY = re.compile(r"^param_group(\d+)$")
STATE_KEYS_KEY = "state_keys"
NUM_PARAM_GROUPS_KEY = "num_param_groups"
OLMO_CORE_V01_OPTIMIZER_KIND = "olmo_core 0.1 flattened optimizer state"

# metadata.json grows with tensors x ranks (about 100 bytes per file entry).
MAX_METADATA_JSON_BYTES = 1 << 30

# The largest pickled value (a param group, the state keys) read from a uint8 tensor.
MAX_PICKLED_VALUE_BYTES = 1 << 20


@dataclass
class _Section:
    """One of ``model/`` and ``optim/``: its metadata and the tensors built from it."""

    folder: Path
    entries: dict[str, dict[str, Any]]
    tensors: list[TensorInfo] = field(default_factory=list)
    # Pickled values (param groups, state keys) by metadata key.
    values: dict[str, Any] = field(default_factory=dict)
    names_in_file: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ranks: set[int] = field(default_factory=set)


def read(detection: Detection, *, deep: bool = False) -> Checkpoint:
    """Read an olmo_core 0.1 sharded checkpoint directory from its metadata and headers.

    ``deep`` changes nothing here: the headers already give every piece's exact location.

    Raises:
        IncompleteCheckpoint: ``model/metadata.json`` is missing.
        CorruptFile: a ``metadata.json`` cannot be parsed.
    """
    root = detection.path
    checkpoint = checkpoint_from_detection(detection, CheckpointKind.OLMO_SHARDED_OLMO_CORE)

    model_metadata = root / MODEL_DIR / METADATA_JSON
    if not model_metadata.is_file():
        raise IncompleteCheckpoint(
            f"{model_metadata}: missing, so the model's rank files cannot be placed; re-copy "
            "the checkpoint with its model/metadata.json"
        )
    model = _read_section(root, root / MODEL_DIR, checkpoint.problems, optimizer=False)
    checkpoint.tensors = model.tensors

    optim: _Section | None = None
    optim_metadata = root / OPTIM_DIR / METADATA_JSON
    if optim_metadata.is_file():
        optim = _read_section(root, root / OPTIM_DIR, checkpoint.problems, optimizer=True)
        checkpoint.optimizer = _optimizer_info(optim)
    elif (root / OPTIM_DIR).is_dir():
        checkpoint.problems.append(
            f"{OPTIM_DIR}/{METADATA_JSON} is missing, so the optimizer state cannot be placed"
        )

    ranks = model.ranks | (optim.ranks if optim else set())
    checkpoint.world_size = max(ranks) + 1 if ranks else None
    if optim is not None and optim.ranks and model.ranks and optim.ranks != model.ranks:
        checkpoint.notes.append(
            f"{MODEL_DIR}/ names ranks {sorted(model.ranks)} and {OPTIM_DIR}/ names ranks "
            f"{sorted(optim.ranks)}"
        )

    known = _file_infos(root, model, optim)
    if detection.config_file is not None:
        known.append(file_record(root / detection.config_file, detection.config_file, "config"))
    train_path = root / "train" / "rank0.pt"
    if train_path.is_file():
        add_train_state(checkpoint, train_path)
    checkpoint.problems.extend(train_rank_problems(root, checkpoint.world_size))
    known.extend(train_files(root))
    checkpoint.files = checkpoint_files(root, known)
    checkpoint.details = {
        "model_keys": len(model.entries),
        "optim_keys": len(optim.entries) if optim else 0,
        "rank_files": sorted(
            {piece.file for tensor in checkpoint.tensors for piece in tensor.shards}
        ),
    }
    return checkpoint


def _read_metadata_json(path: Path) -> dict[str, dict[str, Any]]:
    try:
        size = path.stat().st_size
        if size > MAX_METADATA_JSON_BYTES:
            raise CorruptFile(
                f"{path}: {size} bytes is over the {MAX_METADATA_JSON_BYTES}-byte limit for "
                "olmo_core's metadata.json"
            )
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CorruptFile(f"{path}: cannot read the file ({error.strerror})") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptFile(
            f"{path}: invalid JSON ({error}); re-copy the file from its source"
        ) from error
    tensors = value.get("tensors") if isinstance(value, dict) else None
    if not isinstance(tensors, dict) or not all(isinstance(v, dict) for v in tensors.values()):
        raise CorruptFile(
            f'{path}: expected {{"tensors": {{key: {{...}}}}}} as olmo_core 0.1 writes'
        )
    return tensors


def _file_specs(path: Path, key: str, entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return ``{file: spec}`` of an entry, accepting the older ``flattened_offsets_per_file``."""
    specs = entry.get("shard_spec_per_file")
    if isinstance(specs, dict):
        return {str(file): spec if isinstance(spec, dict) else {} for file, spec in specs.items()}
    older = entry.get("flattened_offsets_per_file")
    if isinstance(older, dict):
        converted: dict[str, dict[str, Any]] = {}
        for file, offsets in older.items():
            if isinstance(offsets, list) and offsets and isinstance(offsets[0], int):
                offsets = [offsets]
            converted[str(file)] = {"flattened_offsets": offsets}
        return converted
    raise CorruptFile(f"{path}: tensor {key!r} has no shard_spec_per_file")


def _ints(path: Path, key: str, what: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value
    ):
        raise CorruptFile(f"{path}: {what} of {key!r} is not a list of non-negative ints")
    return tuple(value)


def _dtype(path: Path, key: str, code: Any) -> str:
    if isinstance(code, str):
        if code in SAFETENSORS_DTYPES:
            return SAFETENSORS_DTYPES[code]
        name = code.removeprefix("torch.")
        if name in DTYPE_SIZES:
            return name
    raise CorruptFile(f"{path}: tensor {key!r} has unknown dtype {code!r}")


def _read_section(root: Path, folder: Path, problems: list[str], *, optimizer: bool) -> _Section:
    metadata_path = folder / METADATA_JSON
    section = _Section(folder=folder, entries=_read_metadata_json(metadata_path))
    headers, unreadable = _read_headers(root, folder, section)

    for key, entry in section.entries.items():
        if optimizer and not key.startswith(STATE_PREFIX):
            _read_value(root, section, key, entry, headers, problems)
            continue
        name = clean_name(key)
        if optimizer:
            fqn, _, state_key = key.removeprefix(STATE_PREFIX).rpartition(STATE_KEY_MARKER)
            name = f"{clean_name(fqn)}.{state_key}"
        tensor = _tensor(
            root, metadata_path, section, key, name, entry, headers, unreadable, problems
        )
        section.tensors.append(tensor)
        problems.extend(coverage_problems(tensor))

    for file, reason in sorted(unreadable.items()):
        names = sorted(section.names_in_file.get(file, ()))
        listed = ", ".join(names[:MAX_NAMES_IN_PROBLEM])
        more = len(names) - MAX_NAMES_IN_PROBLEM
        shown = relative_path(folder / file, root)
        sentence = f"{shown} {reason}"
        if names:
            sentence += f"; it holds pieces of {listed}" + (f" and {more} more" if more > 0 else "")
        problems.append(sentence)
    return section


def _read_headers(
    root: Path, folder: Path, section: _Section
) -> tuple[dict[str, SafetensorsHeader], dict[str, str]]:
    files: set[str] = set()
    for key, entry in section.entries.items():
        files.update(_file_specs(folder / METADATA_JSON, key, entry))

    headers: dict[str, SafetensorsHeader] = {}
    unreadable: dict[str, str] = {}
    for file in sorted(files):
        match = RANK_FILE.match(file)
        if match:
            section.ranks.add(int(match.group(1)))
        path = folder / file
        if Path(file).is_absolute() or ".." in Path(file).parts:
            raise CorruptFile(f"{folder / METADATA_JSON}: names {file!r}, outside the folder")
        if not path.is_file():
            unreadable[file] = "is missing"
            continue
        try:
            headers[file] = read_safetensors_header(path)
        except CorruptFile as error:
            unreadable[file] = f"cannot be read ({error})"
    return headers, unreadable


def _tensor(
    root: Path,
    metadata_path: Path,
    section: _Section,
    key: str,
    name: str,
    entry: dict[str, Any],
    headers: dict[str, SafetensorsHeader],
    unreadable: dict[str, str],
    problems: list[str],
) -> TensorInfo:
    shape = _ints(metadata_path, key, "shape", entry.get("shape"))
    dtype = _dtype(metadata_path, key, entry.get("dtype"))
    tensor = TensorInfo(
        name=name, shape=shape, dtype=dtype, file=None, stored_key=key if key != name else None
    )

    for file, spec in sorted(_file_specs(metadata_path, key, entry).items()):
        shown = relative_path(section.folder / file, root)
        match = RANK_FILE.match(file)
        rank = int(match.group(1)) if match else None
        section.names_in_file[file].add(name)
        pieces = _pieces(metadata_path, key, spec, shown, rank, dtype)
        if file in unreadable:
            tensor.shards.extend(pieces)
            continue

        stored = _entry(headers[file], key)
        expected = sum(piece.numel for piece in pieces)
        if stored is None and expected == 0:
            # olmo_core 0.1 leaves empty optimizer ranges out of the rank file.
            pass
        elif stored is None:
            problems.append(
                f"{name}: {shown} has no tensor {key!r}, which metadata.json places there"
            )
        elif math.prod(stored.shape) != expected or stored.dtype != dtype:
            problems.append(
                f"{name}: {shown} stores {stored.dtype}{list(stored.shape)} under {key!r}, "
                f"metadata.json expects {dtype} with {expected} elements"
            )
        else:
            pieces = _with_data(pieces, stored, shown)
        tensor.shards.extend(pieces)

    if len({piece.file for piece in tensor.shards if piece.numel}) == 1:
        tensor.file = next(piece.file for piece in tensor.shards if piece.numel)
    return tensor


def _entry(header: SafetensorsHeader, key: str) -> SafetensorsEntry | None:
    for entry in header.entries:
        if entry.name == key:
            return entry
    return None


def _pieces(
    path: Path, key: str, spec: dict[str, Any], shown: str, rank: int | None, dtype: str
) -> list[ShardPiece]:
    local_shape = spec.get("local_shape")
    if local_shape is not None:
        box = _ints(path, key, "local_shape", local_shape)
        offsets = _ints(path, key, "global_offset", spec.get("global_offset"))
        return [
            ShardPiece(
                rank=rank, file=shown, key=key, numel=math.prod(box), offsets=offsets, shape=box
            )
        ]

    ranges = spec.get("flattened_offsets")
    if not isinstance(ranges, list):
        raise CorruptFile(
            f"{path}: tensor {key!r} in {shown} has neither local_shape nor flattened_offsets"
        )
    pieces = []
    for item in ranges:
        bounds = _ints(path, key, "flattened_offsets", item)
        if len(bounds) != 2 or bounds[1] < bounds[0]:
            raise CorruptFile(f"{path}: tensor {key!r} has an invalid flattened range {item!r}")
        start, end = bounds
        pieces.append(
            ShardPiece(rank=rank, file=shown, key=key, numel=end - start, flat_range=(start, end))
        )
    return pieces


def _with_data(pieces: list[ShardPiece], stored: SafetensorsEntry, shown: str) -> list[ShardPiece]:
    """Point each piece at its part of the stored 1-D tensor: ranges follow each other in order."""
    placed = []
    position = 0
    for piece in pieces:
        stride = contiguous_stride(piece.shape) if piece.shape is not None else (1,)
        data = StoredBytes(
            file=shown,
            key=stored.name,
            dtype=stored.dtype,
            data_start=stored.begin,
            storage_nbytes=stored.nbytes,
            storage_offset=position,
            stride=stride,
        )
        item_size = DTYPE_SIZES[stored.dtype]
        byte_start = stored.begin + position * item_size
        placed.append(
            ShardPiece(
                rank=piece.rank,
                file=piece.file,
                key=piece.key,
                numel=piece.numel,
                offsets=piece.offsets,
                shape=piece.shape,
                flat_range=piece.flat_range,
                byte_range=(byte_start, byte_start + piece.numel * item_size),
                data=data,
            )
        )
        position += piece.numel
    return placed


def _read_value(
    root: Path,
    section: _Section,
    key: str,
    entry: dict[str, Any],
    headers: dict[str, SafetensorsHeader],
    problems: list[str],
) -> None:
    """Read a pickled optimizer value (``param_group{i}``, ``state_keys``) from its rank file."""
    if key == NUM_PARAM_GROUPS_KEY:
        return
    for file in _file_specs(section.folder / METADATA_JSON, key, entry):
        header = headers.get(file)
        stored = _entry(header, key) if header is not None else None
        if stored is None or stored.nbytes == 0:
            continue
        shown = relative_path(section.folder / file, root)
        if stored.nbytes > MAX_PICKLED_VALUE_BYTES:
            section.values[key] = (
                f"<pickled value of {stored.nbytes} bytes, over the "
                f"{MAX_PICKLED_VALUE_BYTES}-byte limit>"
            )
            return
        try:
            with (section.folder / file).open("rb") as handle:
                raw = os.pread(handle.fileno(), stored.nbytes, stored.begin)
            section.values[key] = unpickle(raw, f"{shown} {key}").value
        except OSError as error:
            problems.append(f"{shown}: cannot read {key} ({error.strerror})")
        except InspectError as error:
            section.values[key] = f"<not readable: {error}>"
        return


def _optimizer_info(section: _Section) -> OptimizerInfo:
    groups: list[tuple[int, dict[str, Any]]] = []
    for key, value in section.values.items():
        match = PARAM_GROUP_KEY.match(key)
        if match is None:
            continue
        if isinstance(value, dict):
            group = param_group_summary(value)
        else:
            group = {"value": to_json_value(value)}
        groups.append((int(match.group(1)), group))
    groups.sort(key=lambda pair: pair[0])

    stored_keys = section.values.get(STATE_KEYS_KEY)
    if isinstance(stored_keys, (list, tuple)) and all(isinstance(k, str) for k in stored_keys):
        state_keys = list(stored_keys)
    else:
        state_keys = sorted({tensor.name.rsplit(".", 1)[-1] for tensor in section.tensors})
    files = sorted({piece.file for tensor in section.tensors for piece in tensor.shards})
    return OptimizerInfo(
        kind=OLMO_CORE_V01_OPTIMIZER_KIND,
        param_groups=[group for _, group in groups],
        state_keys=state_keys,
        tensors=section.tensors,
        files=files,
    )


def _file_infos(root: Path, model: _Section, optim: _Section | None) -> list[FileInfo]:
    infos: list[FileInfo] = []
    for section, role in ((model, "model"), (optim, "optim")):
        if section is None:
            continue
        folder = section.folder
        infos.append(
            file_record(
                folder / METADATA_JSON, relative_path(folder / METADATA_JSON, root), "metadata"
            )
        )
        for file, names in sorted(section.names_in_file.items()):
            match = RANK_FILE.match(file)
            infos.append(
                file_record(
                    folder / file,
                    relative_path(folder / file, root),
                    role,
                    rank=int(match.group(1)) if match else None,
                    tensors=len(names),
                )
            )
    return infos


__all__ = ["read"]
