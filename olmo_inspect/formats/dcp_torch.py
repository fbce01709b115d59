"""torch's DCP loader on metadata read by the restricted unpickler (imports torch).

torch's ``FileSystemReader.read_metadata`` unpickles ``.metadata`` with ``pickle.load``, which
runs code named in the file and fails with ``ModuleNotFoundError: olmo_core`` on OLMo-core
checkpoints, whose ``.metadata`` names OLMo-core's own ``_StorageInfo`` class.
:class:`ParsedMetadataReader` returns a ``Metadata`` built from
:func:`olmo_inspect.io.dcp_metadata.read_dcp_metadata` instead, with torch's classes throughout.
The conversion engine imports this module; the inspect path never does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

from olmo_inspect.io.dcp_metadata import METADATA_FILE, DcpMetadata, read_dcp_metadata

log = logging.getLogger(__name__)


def torch_metadata(parsed: DcpMetadata) -> Metadata:
    """Build torch's ``Metadata`` from a parsed ``.metadata``, with torch's ``_StorageInfo``."""
    state_dict_metadata: dict[str, Any] = {}
    for key, tensor in parsed.tensors.items():
        state_dict_metadata[key] = TensorStorageMetadata(
            properties=TensorProperties(dtype=getattr(torch, tensor.dtype)),
            size=torch.Size(tensor.size),
            chunks=[
                ChunkStorageMetadata(
                    offsets=torch.Size(chunk.offsets), sizes=torch.Size(chunk.sizes)
                )
                for chunk in tensor.chunks
            ],
        )
    for key in parsed.bytes_keys:
        state_dict_metadata[key] = BytesStorageMetadata()

    storage_data = {
        MetadataIndex(fqn=item.key, offset=item.offset, index=item.index): _StorageInfo(
            relative_path=item.file, offset=item.start, length=item.length
        )
        for item in parsed.items
    }
    return Metadata(
        state_dict_metadata=state_dict_metadata,
        planner_data=dict(parsed.planner_data),
        storage_data=storage_data,
        storage_meta=StorageMeta(),
        version=parsed.version,
    )


class ParsedMetadataReader(FileSystemReader):
    """torch's ``FileSystemReader`` whose ``read_metadata`` never unpickles with ``pickle``."""

    def __init__(self, folder: Path, parsed: DcpMetadata | None = None) -> None:
        super().__init__(str(folder))
        self.parsed = parsed if parsed is not None else read_dcp_metadata(folder / METADATA_FILE)

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = torch_metadata(self.parsed)
        metadata.storage_meta.load_id = self.load_id
        return metadata


def storage_reader(folder: Path, parsed: DcpMetadata | None = None) -> ParsedMetadataReader:
    """Return a DCP ``StorageReader`` for ``folder`` (the folder holding ``.metadata``)."""
    return ParsedMetadataReader(folder, parsed)


def load_keys(
    folder: Path, keys: Iterable[str] | None = None, parsed: DcpMetadata | None = None
) -> dict[str, Any]:
    """Load the DCP keys ``keys`` (all when None) of ``folder`` into a nested state dict, on CPU.

    The result nests as the writer's state dict did (``{"model": {...}, "optim": {...}}``),
    following ``planner_data``. Runs without a process group.
    """
    state_dict: dict[str, Any] = {}
    planner = _EmptyStateDictLoadPlanner(keys=set(keys) if keys is not None else None)
    # NOTE: the public ``dcp.load`` copies the top-level dict before planning, so the planner
    # would fill the copy; ``_load_state_dict`` (torch 2.4 to 2.13) fills ``state_dict`` itself.
    _load_state_dict(
        state_dict,
        storage_reader=storage_reader(folder, parsed),
        planner=planner,
        no_dist=True,
    )
    return state_dict
