"""Tests of the OLMo-core (DCP) reader: the upstream OLMo-core 3 fixture, real DCP samples with
several files per rank, a bare ``model_and_optim/`` folder and bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from olmo_inspect.detect import detect
from olmo_inspect.formats import read_checkpoint
from olmo_inspect.io.dcp_metadata import OLMO_CORE_STORAGE_INFO
from olmo_inspect.model import Checkpoint, CheckpointKind, ShardPiece, dtype_size

FIXTURE = "olmo-core3-train"
OLMO_CORE_3_STATE_KEYS = {
    "global_step",
    "global_train_tokens_seen",
    "global_train_petaflops",
    "max_steps",
    "data_loader",
    "epoch",
    "world_size",
    "rng",
    "callbacks",
}


def open_checkpoint(path: Path, deep: bool = False) -> Checkpoint:
    return read_checkpoint(detect(path), deep=deep)


def piece_bytes(root: Path, piece: ShardPiece) -> bytes:
    assert piece.data is not None and piece.data.data_start is not None
    start = piece.data.data_start + piece.data.storage_offset * dtype_size(piece.data.dtype)
    with (root / piece.file).open("rb") as handle:
        handle.seek(start)
        return handle.read(piece.numel * dtype_size(piece.data.dtype))


def box_bytes(tensor: torch.Tensor, piece: ShardPiece) -> bytes:
    assert piece.offsets is not None and piece.shape is not None
    index = tuple(
        slice(offset, offset + size)
        for offset, size in zip(piece.offsets, piece.shape, strict=True)
    )
    return tensor[index].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.fixture(scope="module")
def truth(fixtures_dir: Path) -> dict[str, Any]:
    return json.loads((fixtures_dir / FIXTURE / "ground_truth.json").read_text())


@pytest.fixture(scope="module")
def fixture_path(fixtures_dir: Path, truth: dict[str, Any]) -> Path:
    return fixtures_dir / FIXTURE / truth["checkpoint_path"]


def test_fixture_tensors_match_ground_truth(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path)

    assert checkpoint.kind == CheckpointKind.OLMO_CORE
    assert checkpoint.problems == []
    assert checkpoint.world_size == truth["world_size"]
    assert {
        t.name: {"shape": list(t.shape), "dtype": t.dtype} for t in checkpoint.tensors
    } == truth["tensors"]
    assert checkpoint.nbytes == truth["total_bytes"]
    assert checkpoint.details["dcp_storage_info_class"] == [OLMO_CORE_STORAGE_INFO]


def test_fixture_pieces_match_ground_truth(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path)

    for name, chunks in truth["shards"].items():
        found = [(p.file, p.offsets, p.shape, p.byte_range) for p in checkpoint.tensor(name).shards]
        expected = []
        for chunk in chunks:
            (storage,) = chunk["storage"]
            start = storage["byte_offset"]
            expected.append(
                (
                    f"model_and_optim/{storage['file']}",
                    tuple(chunk["offsets"]),
                    tuple(chunk["sizes"]),
                    (start, start + storage["byte_length"]),
                )
            )
        assert found == expected


def test_fixture_state_optimizer_files(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path)
    details = truth["details"]

    assert checkpoint.train_state is not None
    assert set(checkpoint.train_state.fields) == OLMO_CORE_3_STATE_KEYS
    assert checkpoint.train_state.step == details["train_state"]["global_step"]
    assert checkpoint.details["metadata_json"] == details["metadata_json"]
    assert checkpoint.details["dcp_files"] == details["dcp_files"]
    assert checkpoint.details["dcp_files_per_rank"] == {"0": 6, "1": 6}

    optimizer = checkpoint.optimizer
    assert len(optimizer.tensors) == details["dcp_non_model_tensor_keys"]
    (group,) = optimizer.param_groups
    assert sorted(group["param_names"]) == sorted(truth["tensors"])
    assert group["initial_lr"] == checkpoint.config["train_module"]["optim"]["lr"]

    expected_files = {
        entry["path"].removeprefix("step3/"): entry["bytes"] for entry in truth["files"]
    }
    assert {info.path: info.bytes for info in checkpoint.files} == expected_files


def test_bare_dcp_folder(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path / "model_and_optim")

    assert checkpoint.kind == CheckpointKind.OLMO_CORE
    assert checkpoint.problems == []
    assert checkpoint.train_state is None
    assert sorted(t.name for t in checkpoint.tensors) == sorted(truth["tensors"])
    first = checkpoint.tensor("embeddings.weight").shards[0]
    assert first.file == truth["shards"]["embeddings.weight"][0]["storage"][0]["file"]


def test_sample_values_through_pieces(sample_factory: Any) -> None:
    sample = sample_factory("olmo-core-dcp")
    checkpoint = open_checkpoint(sample.path, deep=True)

    assert checkpoint.problems == []
    assert checkpoint.world_size == sample.world_size
    assert max(int(n) for n in checkpoint.details["dcp_files_per_rank"].values()) > 1
    assert {t.name for t in checkpoint.tensors} == set(sample.tensors)
    for tensor in checkpoint.tensors:
        for piece in tensor.shards:
            assert piece_bytes(sample.path, piece) == box_bytes(sample.tensors[tensor.name], piece)

    optimizer = checkpoint.optimizer
    assert {t.name for t in optimizer.tensors} == set(sample.optimizer_tensors)
    for tensor in optimizer.tensors:
        for piece in tensor.shards:
            expected = sample.optimizer_tensors[tensor.name]
            assert piece_bytes(sample.path, piece) == box_bytes(expected, piece)


def test_sample_train_state(sample_factory: Any) -> None:
    sample = sample_factory("olmo-core-dcp")
    checkpoint = open_checkpoint(sample.path)

    assert checkpoint.train_state is not None
    for key, value in sample.train_state.items():
        if isinstance(value, (int, float, str)):
            assert checkpoint.train_state.fields[key] == value


@pytest.fixture
def fixture_copy(fixture_path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "step3"
    shutil.copytree(fixture_path, target)
    return target


def test_missing_rank_file(fixture_copy: Path) -> None:
    (fixture_copy / "model_and_optim" / "__1_3.distcp").unlink()

    checkpoint = open_checkpoint(fixture_copy)

    assert not checkpoint.complete
    assert any("model_and_optim/__1_3.distcp is missing" in p for p in checkpoint.problems)
    assert checkpoint.world_size == 2


def test_truncated_rank_file(fixture_copy: Path) -> None:
    path = fixture_copy / "model_and_optim" / "__0_2.distcp"
    path.write_bytes(path.read_bytes()[:1000])

    checkpoint = open_checkpoint(fixture_copy)

    assert any("__0_2.distcp is 1000 bytes" in p for p in checkpoint.problems)


def test_rank_file_replaced(fixture_copy: Path) -> None:
    folder = fixture_copy / "model_and_optim"
    shutil.copyfile(folder / "__0_0.distcp", folder / "__1_0.distcp")

    checkpoint = open_checkpoint(fixture_copy)

    assert any("__1_0.distcp" in problem for problem in checkpoint.problems)


def test_unreferenced_rank_file(fixture_copy: Path) -> None:
    folder = fixture_copy / "model_and_optim"
    shutil.copyfile(folder / "__1_0.distcp", folder / "__5_0.distcp")

    checkpoint = open_checkpoint(fixture_copy)

    assert checkpoint.world_size == 2
    assert checkpoint.problems == []
    assert any("__5_0.distcp" in note for note in checkpoint.notes)


def test_world_size_above_train_state(fixture_copy: Path) -> None:
    state = {"global_step": 3, "world_size": 1}
    torch.save(state, fixture_copy / "train" / "rank0.pt")

    checkpoint = open_checkpoint(fixture_copy)

    assert checkpoint.world_size == 2
    assert any("world_size 1" in problem for problem in checkpoint.problems)


def test_world_size_below_train_state(fixture_copy: Path) -> None:
    torch.save({"global_step": 3, "world_size": 4}, fixture_copy / "train" / "rank0.pt")

    checkpoint = open_checkpoint(fixture_copy)

    assert checkpoint.world_size == 2
    assert any("world_size 4" in note for note in checkpoint.notes)
    assert not any("train/rank2.pt" in problem for problem in checkpoint.problems)
