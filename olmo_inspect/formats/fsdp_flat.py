"""FSDP flat-parameter shard metadata, turned into element ranges of the original parameters.

FSDP (``FullyShardedDataParallel`` with flat parameters) concatenates a wrapped module's
parameters into one flat tensor and gives each rank a contiguous slice of it. Each rank records
which part of every original parameter its slice holds: torch >= 2.1 pickles one
``_ShardParamInfo`` per parameter, torch <= 2.0.1 pickled ``_shard_indices`` and
``_shard_param_offsets`` per flat parameter. Both describe inclusive end indices; this module
turns them into end-exclusive :class:`ParamSlice` records. It reads metadata only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from olmo_inspect.errors import CorruptFile
from olmo_inspect.io.unpickler import PickledObject

log = logging.getLogger(__name__)

FSDP_WRAPPER_PREFIX = "_fsdp_wrapped_module."

# Field order of torch's ``_ShardParamInfo`` NamedTuple.
SHARD_PARAM_INFO_FIELDS = (
    "in_shard",
    "offset_in_shard",
    "numel_in_shard",
    "intra_param_start_idx",
    "intra_param_end_idx",
)


def strip_fsdp_wrappers(name: str) -> str:
    """Remove every ``_fsdp_wrapped_module.`` from a module path or parameter name."""
    return name.replace(FSDP_WRAPPER_PREFIX, "")


def join_name(module: str, fqn: str) -> str:
    """Join a module path and a parameter FQN the way the upstream unsharder does.

    FSDP wrapper segments are removed and the root module (name ``""``) adds no prefix.
    """
    module = strip_fsdp_wrappers(module).strip(".")
    if module.endswith("_fsdp_wrapped_module"):
        module = module.removesuffix("_fsdp_wrapped_module").strip(".")
    fqn = strip_fsdp_wrappers(fqn)
    return f"{module}.{fqn}" if module else fqn


@dataclass(frozen=True)
class ParamSlice:
    """The part of one original parameter that one rank's flat-parameter shard stores.

    ``start`` and ``end`` are end-exclusive offsets into the row-major flattened parameter;
    ``offset_in_shard`` is where that part begins in the rank's flat shard. All in elements.
    """

    offset_in_shard: int
    start: int
    end: int

    @property
    def numel(self) -> int:
        return self.end - self.start


def _info_fields(info: Any) -> tuple[Any, ...] | None:
    if isinstance(info, PickledObject):
        if len(info.pickle_args) == len(SHARD_PARAM_INFO_FIELDS):
            return tuple(info.pickle_args)
        fields = info.fields()
        if all(name in fields for name in SHARD_PARAM_INFO_FIELDS):
            return tuple(fields[name] for name in SHARD_PARAM_INFO_FIELDS)
        return None
    if isinstance(info, (tuple, list)) and len(info) == len(SHARD_PARAM_INFO_FIELDS):
        return tuple(info)
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def slices_from_param_infos(infos: Sequence[Any], source: str) -> list[ParamSlice | None]:
    """Turn torch >= 2.1 ``_ShardParamInfo`` records into slices, None for a parameter not held.

    Raises:
        CorruptFile: a record is not a ``_ShardParamInfo`` or its indices disagree.
    """
    slices: list[ParamSlice | None] = []
    for index, info in enumerate(infos):
        fields = _info_fields(info)
        if fields is None:
            raise CorruptFile(
                f"{source}: _shard_param_infos[{index}] is not a _ShardParamInfo; "
                "the file was not written by FSDP's local state dict"
            )
        in_shard, offset, numel, start, end_inclusive = fields
        if not in_shard:
            slices.append(None)
            continue

        values = [_as_int(offset), _as_int(numel), _as_int(start), _as_int(end_inclusive)]
        if any(value is None for value in values):
            raise CorruptFile(
                f"{source}: _shard_param_infos[{index}] has non-integer indices; "
                "the file is corrupt"
            )
        offset_i, numel_i, start_i, end_i = (int(value) for value in values if value is not None)
        if end_i + 1 - start_i != numel_i or numel_i < 0 or offset_i < 0:
            raise CorruptFile(
                f"{source}: _shard_param_infos[{index}] gives {numel_i} elements but indices "
                f"[{start_i}, {end_i}]; the file is corrupt"
            )
        slices.append(ParamSlice(offset_in_shard=offset_i, start=start_i, end=end_i + 1))
    return slices


def slices_from_offsets(
    shard_indices: Any,
    shard_param_offsets: Any,
    param_count: int,
    source: str,
) -> list[ParamSlice | None]:
    """Turn torch <= 2.0.1 ``_shard_indices`` and ``_shard_param_offsets`` into slices.

    ``_shard_indices`` is the inclusive range of parameter indices in this rank's shard, or
    ``(0, 0)`` with no offsets when the shard has none. ``_shard_param_offsets`` gives, for each
    of them, the inclusive element range of the flattened parameter. The parts follow each
    other in the rank's flat shard, so each one's ``offset_in_shard`` is the sum of the ones
    before it.

    Raises:
        CorruptFile: the indices and offsets do not fit together.
    """
    slices: list[ParamSlice | None] = [None] * param_count
    offsets = list(shard_param_offsets) if isinstance(shard_param_offsets, (list, tuple)) else None
    if offsets is None or not isinstance(shard_indices, (list, tuple)) or len(shard_indices) != 2:
        raise CorruptFile(f"{source}: _shard_indices/_shard_param_offsets are malformed")
    if not offsets:
        return slices

    first, last = (_as_int(value) for value in shard_indices)
    if first is None or last is None or last - first + 1 != len(offsets) or last >= param_count:
        raise CorruptFile(
            f"{source}: _shard_indices {list(shard_indices)} do not match "
            f"{len(offsets)} _shard_param_offsets for {param_count} parameters"
        )

    position = 0
    for index, pair in zip(range(first, last + 1), offsets, strict=True):
        start = _as_int(pair[0]) if isinstance(pair, (list, tuple)) and len(pair) == 2 else None
        end = _as_int(pair[1]) if start is not None else None
        if start is None or end is None or end < start:
            raise CorruptFile(f"{source}: _shard_param_offsets entry {pair!r:.60} is malformed")
        slices[index] = ParamSlice(offset_in_shard=position, start=start, end=end + 1)
        position += end + 1 - start
    return slices
