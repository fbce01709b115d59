"""Tests of the DCP ``.metadata`` reader and item locators against checkpoints torch writes."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import _StorageInfo

from olmo_inspect.errors import CorruptFile, UnsupportedFormat
from olmo_inspect.formats.dcp_torch import load_keys
from olmo_inspect.io.dcp_metadata import (
    OLMO_CORE_STORAGE_INFO,
    TORCH_STORAGE_INFO,
    read_bytes_item,
    read_dcp_metadata,
    read_item_tensor,
    resolve_item,
)

OLMO_CORE_MODULE = "olmo_core.distributed.checkpoint.filesystem"


def _write_dcp(folder: Path) -> dict[str, object]:
    """Save a small state dict with DCP in this process and return what was saved."""
    generator = torch.Generator().manual_seed(0)
    state = {
        "model": {
            "embeddings.weight": torch.randn(12, 4, generator=generator),
            "blocks.0.norm.weight": torch.randn(4, generator=generator).to(torch.bfloat16),
        },
        "optim": {"param_groups": [{"lr": 0.25, "betas": (0.9, 0.95), "params": ["a", "b"]}]},
    }
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(folder)), no_dist=True)
    return state


@pytest.fixture
def dcp_folder(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    folder = tmp_path / "model_and_optim"
    return folder, _write_dcp(folder)


def test_metadata_tensors_and_items(dcp_folder: tuple[Path, dict[str, object]]) -> None:
    folder, state = dcp_folder
    metadata = read_dcp_metadata(folder / ".metadata")
    model = state["model"]

    for name, tensor in model.items():
        entry = metadata.tensors[f"model.{name}"]
        assert entry.size == tuple(tensor.shape)
        assert entry.dtype == str(tensor.dtype).removeprefix("torch.")
        assert [chunk.offsets for chunk in entry.chunks] == [(0,) * tensor.dim()]
        assert [chunk.sizes for chunk in entry.chunks] == [tuple(tensor.shape)]
    assert "optim.param_groups.0.lr" in metadata.bytes_keys
    assert metadata.storage_info_classes == [TORCH_STORAGE_INFO]
    assert all((folder / item.file).is_file() for item in metadata.items)


def test_metadata_items_match_torch_reader(dcp_folder: tuple[Path, dict[str, object]]) -> None:
    folder, _ = dcp_folder
    expected = dcp.FileSystemReader(str(folder)).read_metadata()
    metadata = read_dcp_metadata(folder / ".metadata")

    ours = {
        (item.key, item.offset): (item.file, item.start, item.length) for item in metadata.items
    }
    theirs = {
        (index.fqn, tuple(index.offset) if index.offset is not None else None): (
            info.relative_path,
            info.offset,
            info.length,
        )
        for index, info in expected.storage_data.items()
    }
    assert ours == theirs
    assert metadata.planner_data == expected.planner_data


def test_item_tensor_locates_bytes(dcp_folder: tuple[Path, dict[str, object]]) -> None:
    folder, state = dcp_folder
    metadata = read_dcp_metadata(folder / ".metadata")

    for name, tensor in state["model"].items():
        item = metadata.item_lookup()[(f"model.{name}", (0,) * tensor.dim())]
        located = read_item_tensor(folder / item.file, item.start, item.length)
        data_start, nbytes = resolve_item(folder / item.file, item.start, item.length)
        raw = (folder / item.file).read_bytes()[data_start : data_start + nbytes]

        assert located.data_start == data_start
        assert located.shape == tuple(tensor.shape)
        assert located.storage_offset == 0
        assert nbytes == tensor.numel() * tensor.element_size()
        assert raw == tensor.contiguous().view(torch.uint8).numpy().tobytes()


def test_bytes_item_value(dcp_folder: tuple[Path, dict[str, object]]) -> None:
    folder, state = dcp_folder
    metadata = read_dcp_metadata(folder / ".metadata")
    group = state["optim"]["param_groups"][0]

    for field_name in ("lr", "betas", "params"):
        item = metadata.item_lookup()[(f"optim.param_groups.0.{field_name}", None)]
        with (folder / item.file).open("rb") as handle:
            value = read_bytes_item(handle, item.file, item)
        assert value == group[field_name]


def test_bytes_item_over_limit(dcp_folder: tuple[Path, dict[str, object]]) -> None:
    folder, _ = dcp_folder
    metadata = read_dcp_metadata(folder / ".metadata")
    item = metadata.item_lookup()[("optim.param_groups.0.params", None)]

    with (folder / item.file).open("rb") as handle, pytest.raises(UnsupportedFormat):
        read_bytes_item(handle, item.file, item, limit=item.length - 1)


def _olmo_core_storage_info(monkeypatch: pytest.MonkeyPatch) -> type:
    """Register a module named like OLMo-core's and return its ``_StorageInfo`` class."""

    @dataclasses.dataclass
    class OlmoCoreStorageInfo:
        relative_path: str
        offset: int
        length: int

    OlmoCoreStorageInfo.__module__ = OLMO_CORE_MODULE
    OlmoCoreStorageInfo.__qualname__ = "_StorageInfo"
    OlmoCoreStorageInfo.__name__ = "_StorageInfo"
    parts = OLMO_CORE_MODULE.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[OLMO_CORE_MODULE]._StorageInfo = OlmoCoreStorageInfo
    return OlmoCoreStorageInfo


def _repickle_as_olmo_core(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage_info = _olmo_core_storage_info(monkeypatch)
    with (folder / ".metadata").open("rb") as handle:
        metadata = pickle.load(handle)  # our own test file, written just above
    metadata.storage_data = {
        index: storage_info(info.relative_path, info.offset, info.length)
        for index, info in metadata.storage_data.items()
    }
    with (folder / ".metadata").open("wb") as handle:
        pickle.dump(metadata, handle)


def test_olmo_core_storage_info_class(
    dcp_folder: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = dcp_folder
    before = read_dcp_metadata(folder / ".metadata")
    with monkeypatch.context() as patch:
        _repickle_as_olmo_core(folder, patch)
    after = read_dcp_metadata(folder / ".metadata")

    assert after.storage_info_classes == [OLMO_CORE_STORAGE_INFO]
    assert sorted(after.items, key=repr) == sorted(before.items, key=repr)
    with pytest.raises(ModuleNotFoundError):
        dcp.FileSystemReader(str(folder)).read_metadata()


def test_parsed_reader_loads_olmo_core_metadata(
    dcp_folder: tuple[Path, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, state = dcp_folder
    with monkeypatch.context() as patch:
        _repickle_as_olmo_core(folder, patch)

    loaded = load_keys(folder)

    for name, tensor in state["model"].items():
        assert torch.equal(loaded["model"][name], tensor)
    assert loaded["optim"]["param_groups"][0] == state["optim"]["param_groups"][0]


def test_truncated_metadata_is_corrupt(dcp_folder: tuple[Path, dict[str, object]]) -> None:
    folder, _ = dcp_folder
    raw = (folder / ".metadata").read_bytes()
    (folder / ".metadata").write_bytes(raw[: len(raw) // 2])

    with pytest.raises(CorruptFile) as caught:
        read_dcp_metadata(folder / ".metadata")
    assert str(folder / ".metadata") in str(caught.value)
    assert "\n" not in str(caught.value)


def test_other_pickle_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / ".metadata"
    path.write_bytes(pickle.dumps({"not": "metadata"}))

    with pytest.raises(UnsupportedFormat):
        read_dcp_metadata(path)


def test_storage_path_outside_folder(dcp_folder: tuple[Path, dict[str, object]]) -> None:
    folder, _ = dcp_folder
    with (folder / ".metadata").open("rb") as handle:
        metadata = pickle.load(handle)  # our own test file
    metadata.storage_data = {
        index: _StorageInfo("../outside.distcp", info.offset, info.length)
        for index, info in metadata.storage_data.items()
    }
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))

    with pytest.raises(CorruptFile) as caught:
        read_dcp_metadata(folder / ".metadata")
    assert "../outside.distcp" in str(caught.value)


def test_fixture_items_match_ground_truth(fixtures_dir: Path) -> None:
    for name in ("olmo1-sharded-torch-new", "olmo-core3-train"):
        truth = json.loads((fixtures_dir / name / "ground_truth.json").read_text())
        folder = fixtures_dir / name / truth["checkpoint_path"] / "model_and_optim"
        metadata = read_dcp_metadata(folder / ".metadata")
        lookup = metadata.item_lookup()

        for tensor_name, chunks in truth["shards"].items():
            key = f"{truth['details']['dcp_key_prefix']}{tensor_name}"
            entry = metadata.tensors[key]
            assert list(entry.size) == truth["tensors"][tensor_name]["shape"]
            assert entry.dtype == truth["tensors"][tensor_name]["dtype"]
            for chunk in chunks:
                item = lookup[(key, tuple(chunk["offsets"]))]
                (storage,) = chunk["storage"]
                assert (item.file, item.start, item.length) == (
                    storage["file"],
                    storage["byte_offset"],
                    storage["byte_length"],
                )
