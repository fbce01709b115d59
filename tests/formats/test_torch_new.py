"""Tests of the OLMo ``torch_new`` (DCP) reader: upstream fixture, real DCP samples, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from olmo_inspect.detect import detect
from olmo_inspect.errors import CorruptFile, IncompleteCheckpoint, InspectError
from olmo_inspect.formats import read_checkpoint
from olmo_inspect.model import Checkpoint, CheckpointKind, ShardPiece, dtype_size

FIXTURE = "olmo1-sharded-torch-new"


def open_checkpoint(path: Path, deep: bool = False) -> Checkpoint:
    return read_checkpoint(detect(path), deep=deep)


def piece_bytes(root: Path, piece: ShardPiece) -> bytes:
    """Return the raw bytes of a resolved piece (``deep`` reads set ``data.data_start``)."""
    assert piece.data is not None and piece.data.data_start is not None
    start = piece.data.data_start + piece.data.storage_offset * dtype_size(piece.data.dtype)
    with (root / piece.file).open("rb") as handle:
        handle.seek(start)
        return handle.read(piece.numel * dtype_size(piece.data.dtype))


def box_of(tensor: torch.Tensor, piece: ShardPiece) -> torch.Tensor:
    assert piece.offsets is not None and piece.shape is not None
    index = tuple(
        slice(offset, offset + size)
        for offset, size in zip(piece.offsets, piece.shape, strict=True)
    )
    return tensor[index].contiguous()


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.fixture(scope="module")
def truth(fixtures_dir: Path) -> dict[str, Any]:
    return json.loads((fixtures_dir / FIXTURE / "ground_truth.json").read_text())


@pytest.fixture(scope="module")
def fixture_path(fixtures_dir: Path, truth: dict[str, Any]) -> Path:
    return fixtures_dir / FIXTURE / truth["checkpoint_path"]


def test_fixture_tensors_match_ground_truth(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path)

    assert checkpoint.kind == CheckpointKind.OLMO_SHARDED_TORCH_NEW
    assert checkpoint.problems == []
    assert checkpoint.world_size == truth["world_size"]
    assert {
        t.name: {"shape": list(t.shape), "dtype": t.dtype} for t in checkpoint.tensors
    } == truth["tensors"]
    assert checkpoint.nbytes == truth["total_bytes"]
    for tensor in checkpoint.tensors:
        assert tensor.stored_key == truth["details"]["dcp_key_prefix"] + tensor.name


def test_fixture_pieces_match_ground_truth(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path)

    for name, chunks in truth["shards"].items():
        pieces = checkpoint.tensor(name).shards
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
                    int(storage["file"].split("_")[2]),
                )
            )
        found = [(p.file, p.offsets, p.shape, p.byte_range, p.rank) for p in pieces]
        assert found == expected


def test_fixture_optimizer_and_state(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path)
    optimizer = checkpoint.optimizer
    details = truth["details"]

    assert optimizer is not None
    assert len(optimizer.tensors) == details["dcp_non_model_tensor_keys"]
    assert optimizer.state_keys == ["exp_avg", "exp_avg_sq", "step"]
    stored = {tensor.stored_key for tensor in optimizer.tensors}
    assert set(details["dcp_non_model_tensor_keys_sample"]) <= stored
    for tensor in optimizer.tensors:
        fqn, _, key = tensor.stored_key.removeprefix("optim.state.").rpartition(".")
        assert tensor.name == f"{fqn}.{key}"
    assert len(optimizer.param_groups) == 2
    assert [group["lr"] for group in optimizer.param_groups] == [
        checkpoint.config["optimizer"]["learning_rate"]
    ] * 2

    state = details["train_state"]
    assert checkpoint.train_state is not None
    assert checkpoint.train_state.step == state["global_step"]
    assert checkpoint.train_state.tokens_seen == state["global_train_tokens_seen"]
    assert sorted(checkpoint.train_state.fields) == state["keys"]


def test_fixture_files_listed(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path)
    expected = {
        entry["path"].removeprefix(f"{truth['checkpoint_path']}/"): entry["bytes"]
        for entry in truth["files"]
        if entry["path"].startswith(f"{truth['checkpoint_path']}/")
    }

    assert {info.path: info.bytes for info in checkpoint.files} == expected
    roles = {info.path: info.role for info in checkpoint.files}
    assert roles["model_and_optim/.metadata"] == "metadata"
    assert roles["train/rank1.pt"] == "train"
    assert {info.rank for info in checkpoint.files if info.path.endswith(".distcp")} == {0, 1}


def test_fixture_deep_locates_items(fixture_path: Path) -> None:
    checkpoint = open_checkpoint(fixture_path, deep=True)

    assert checkpoint.problems == []
    for tensor in [*checkpoint.tensors, *checkpoint.optimizer.tensors]:
        for piece in tensor.shards:
            assert piece.data is not None and piece.data.data_start is not None
            assert piece.byte_range[0] < piece.data.data_start < piece.byte_range[1]


def test_sample_values_through_pieces(sample_factory: Any) -> None:
    sample = sample_factory("olmo1-sharded-torch-new")
    checkpoint = open_checkpoint(sample.path, deep=True)

    assert checkpoint.problems == []
    assert checkpoint.world_size == sample.world_size
    assert {t.name for t in checkpoint.tensors} == set(sample.tensors)
    for tensor in checkpoint.tensors:
        expected = sample.tensors[tensor.name]
        assert tensor.shape == tuple(expected.shape)
        assert tensor.dtype == str(expected.dtype).removeprefix("torch.")
        for piece in tensor.shards:
            assert piece_bytes(sample.path, piece) == tensor_bytes(box_of(expected, piece))


def test_sample_optimizer_values(sample_factory: Any) -> None:
    sample = sample_factory("olmo1-sharded-torch-new")
    checkpoint = open_checkpoint(sample.path, deep=True)
    optimizer = checkpoint.optimizer

    assert {t.name for t in optimizer.tensors} == set(sample.optimizer_tensors)
    for tensor in optimizer.tensors:
        expected = sample.optimizer_tensors[tensor.name]
        assert tensor.shape == tuple(expected.shape)
        for piece in tensor.shards:
            assert piece_bytes(sample.path, piece) == tensor_bytes(box_of(expected, piece))


def test_sample_three_ranks(sample_factory: Any) -> None:
    sample = sample_factory("olmo1-sharded-torch-new", world_size=3)
    checkpoint = open_checkpoint(sample.path)

    assert checkpoint.problems == []
    assert checkpoint.world_size == 3
    ranks = {piece.rank for tensor in checkpoint.tensors for piece in tensor.shards}
    assert ranks == {0, 1, 2}


@pytest.fixture
def fixture_copy(fixture_path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "step3"
    shutil.copytree(fixture_path, target)
    return target


def names_in_file(checkpoint: Checkpoint, file: str) -> set[str]:
    return {
        tensor.name
        for tensor in [*checkpoint.tensors, *checkpoint.optimizer.tensors]
        if any(piece.file == file for piece in tensor.shards)
    }


def test_missing_rank_file(fixture_copy: Path) -> None:
    intact = open_checkpoint(fixture_copy)
    (fixture_copy / "model_and_optim" / "__1_0.distcp").unlink()

    checkpoint = open_checkpoint(fixture_copy)

    assert not checkpoint.complete
    problem = next(p for p in checkpoint.problems if "__1_0.distcp is missing" in p)
    first_names = sorted(names_in_file(intact, "model_and_optim/__1_0.distcp"))[:3]
    assert all(name in problem for name in first_names)


def test_truncated_rank_file(fixture_copy: Path) -> None:
    path = fixture_copy / "model_and_optim" / "__0_0.distcp"
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size - 100)

    checkpoint = open_checkpoint(fixture_copy)

    assert any(f"{size - 100} bytes, shorter than the {size}" in p for p in checkpoint.problems)


@pytest.mark.parametrize(("replaced", "source"), [("__1_0", "__0_0"), ("__0_0", "__1_0")])
def test_rank_file_replaced(fixture_copy: Path, replaced: str, source: str) -> None:
    folder = fixture_copy / "model_and_optim"
    shutil.copyfile(folder / f"{source}.distcp", folder / f"{replaced}.distcp")

    checkpoint = open_checkpoint(fixture_copy)

    assert any(f"{replaced}.distcp" in problem for problem in checkpoint.problems)


def test_unreadable_metadata(fixture_copy: Path) -> None:
    path = fixture_copy / "model_and_optim" / ".metadata"
    path.write_bytes(path.read_bytes()[:1000])

    with pytest.raises(CorruptFile) as caught:
        open_checkpoint(fixture_copy)
    assert ".metadata" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_metadata(fixture_copy: Path) -> None:
    (fixture_copy / "model_and_optim" / ".metadata").unlink()

    with pytest.raises(IncompleteCheckpoint):
        open_checkpoint(fixture_copy)


def test_missing_train_rank(fixture_copy: Path) -> None:
    (fixture_copy / "train" / "rank1.pt").unlink()

    checkpoint = open_checkpoint(fixture_copy)

    assert any("train/rank1.pt" in problem for problem in checkpoint.problems)


def test_deep_finds_broken_item(fixture_copy: Path) -> None:
    """Break the zip end record of a middle item: only the deep read parses every item."""
    checkpoint = open_checkpoint(fixture_copy)
    pieces = sorted(
        (piece for tensor in checkpoint.tensors for piece in tensor.shards),
        key=lambda piece: (piece.file, piece.byte_range),
    )
    in_first_file = [piece for piece in pieces if piece.file == pieces[0].file]
    middle = in_first_file[len(in_first_file) // 2]
    path = fixture_copy / middle.file
    raw = bytearray(path.read_bytes())
    end_record = middle.byte_range[1] - 22
    raw[end_record : end_record + 4] = b"XXXX"
    path.write_bytes(bytes(raw))

    assert open_checkpoint(fixture_copy).problems == []
    deep_problems = open_checkpoint(fixture_copy, deep=True).problems
    assert any(f"[{middle.byte_range[0]}, " in problem for problem in deep_problems)


def test_errors_are_inspect_errors(fixture_copy: Path) -> None:
    (fixture_copy / "model_and_optim" / ".metadata").write_bytes(b"")

    with pytest.raises(InspectError):
        open_checkpoint(fixture_copy)
