"""Tests of the olmo_core 0.1 (``olmo-sharded-olmo-core``) reader: upstream fixture, samples,
a rectangular piece and bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from olmo_inspect.detect import detect
from olmo_inspect.errors import CorruptFile
from olmo_inspect.formats import read_checkpoint
from olmo_inspect.model import Checkpoint, CheckpointKind, ShardPiece, dtype_size

FIXTURE = "olmo2-sharded-olmo-core"


def open_checkpoint(path: Path) -> Checkpoint:
    return read_checkpoint(detect(path))


def piece_bytes(root: Path, piece: ShardPiece) -> bytes:
    assert piece.data is not None and piece.data.data_start is not None
    start = piece.data.data_start + piece.data.storage_offset * dtype_size(piece.data.dtype)
    with (root / piece.file).open("rb") as handle:
        handle.seek(start)
        return handle.read(piece.numel * dtype_size(piece.data.dtype))


def flat_bytes(tensor: torch.Tensor, start: int, end: int) -> bytes:
    return tensor.reshape(-1)[start:end].contiguous().view(torch.uint8).numpy().tobytes()


@pytest.fixture(scope="module")
def truth(fixtures_dir: Path) -> dict[str, Any]:
    return json.loads((fixtures_dir / FIXTURE / "ground_truth.json").read_text())


@pytest.fixture(scope="module")
def fixture_path(fixtures_dir: Path, truth: dict[str, Any]) -> Path:
    return fixtures_dir / FIXTURE / truth["checkpoint_path"]


def test_fixture_tensors_match_ground_truth(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path)

    assert checkpoint.kind == CheckpointKind.OLMO_SHARDED_OLMO_CORE
    assert checkpoint.problems == []
    assert checkpoint.world_size == truth["world_size"]
    assert {
        t.name: {"shape": list(t.shape), "dtype": t.dtype} for t in checkpoint.tensors
    } == truth["tensors"]
    assert checkpoint.nbytes == truth["total_bytes"]


def test_fixture_pieces_match_ground_truth(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path)

    for name, specs in truth["shards"].items():
        expected = [
            (spec["file"], tuple(offsets))
            for spec in specs
            for offsets in spec["flattened_offsets"]
        ]
        found = [(piece.file, piece.flat_range) for piece in checkpoint.tensor(name).shards]
        assert found == expected
        for piece in checkpoint.tensor(name).shards:
            assert piece.numel == piece.flat_range[1] - piece.flat_range[0]
            assert piece.rank == int(piece.file.split("_")[1].split(".")[0])


def test_fixture_optimizer_and_state(fixture_path: Path, truth: dict[str, Any]) -> None:
    checkpoint = open_checkpoint(fixture_path)
    optimizer = checkpoint.optimizer

    assert optimizer.state_keys == ["exp_avg", "exp_avg_sq", "step"]
    assert {t.name for t in optimizer.tensors} == {
        f"{name}.{key}" for name in truth["tensors"] for key in optimizer.state_keys
    }
    assert [group["lr"] for group in optimizer.param_groups] == [
        checkpoint.config["optimizer"]["learning_rate"]
    ] * 2
    assert sum(group["params_count"] for group in optimizer.param_groups) == len(truth["tensors"])
    assert checkpoint.train_state.step == truth["details"]["train_state"]["global_step"]
    expected_files = {
        entry["path"].removeprefix("step3/"): entry["bytes"]
        for entry in truth["files"]
        if entry["path"].startswith("step3/")
    }
    assert {info.path: info.bytes for info in checkpoint.files} == expected_files


def test_sample_values_through_pieces(sample_factory: Any) -> None:
    sample = sample_factory("olmo2-sharded-olmo-core")
    checkpoint = open_checkpoint(sample.path)

    assert checkpoint.problems == []
    assert {t.name for t in checkpoint.tensors} == set(sample.tensors)
    for tensor in checkpoint.tensors:
        for piece in tensor.shards:
            if piece.numel == 0:
                continue
            expected = flat_bytes(sample.tensors[tensor.name], *piece.flat_range)
            assert piece_bytes(sample.path, piece) == expected

    optimizer = checkpoint.optimizer
    assert {t.name for t in optimizer.tensors} == set(sample.optimizer_tensors)
    for tensor in optimizer.tensors:
        for piece in tensor.shards:
            if piece.numel:
                expected = flat_bytes(sample.optimizer_tensors[tensor.name], *piece.flat_range)
                assert piece_bytes(sample.path, piece) == expected


def test_rectangular_piece(tmp_path: Path) -> None:
    weight = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "config.yaml").write_text("sharded_checkpointer: olmo_core\n")
    specs = {}
    for rank, (start, end) in enumerate([(0, 4), (4, 6)]):
        save_file({"w": weight[start:end].reshape(-1).clone()}, model / f"rank_{rank}.safetensors")
        specs[f"rank_{rank}.safetensors"] = {
            "flattened_offsets": None,
            "local_shape": [end - start, 4],
            "global_offset": [start, 0],
        }
    metadata = {
        "tensors": {
            "w": {"shape": [6, 4], "is_sharded": True, "dtype": "F32", "shard_spec_per_file": specs}
        }
    }
    (model / "metadata.json").write_text(json.dumps(metadata))

    checkpoint = open_checkpoint(tmp_path)

    assert checkpoint.problems == []
    pieces = checkpoint.tensor("w").shards
    assert [(p.offsets, p.shape) for p in pieces] == [((0, 0), (4, 4)), ((4, 0), (2, 4))]
    for piece, (start, end) in zip(pieces, [(0, 4), (4, 6)], strict=True):
        assert piece_bytes(tmp_path, piece) == weight[start:end].numpy().tobytes()


@pytest.fixture
def fixture_copy(fixture_path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "step3"
    shutil.copytree(fixture_path, target)
    return target


def test_missing_rank_file(fixture_copy: Path) -> None:
    (fixture_copy / "model" / "rank_1.safetensors").unlink()

    checkpoint = open_checkpoint(fixture_copy)

    problem = next(p for p in checkpoint.problems if "model/rank_1.safetensors is missing" in p)
    assert "transformer.blocks.0.att_proj.weight" in problem
    pieces = checkpoint.tensor("transformer.ff_out.weight").shards
    assert [piece.data is None for piece in pieces] == [False, True]


def test_truncated_rank_file(fixture_copy: Path) -> None:
    path = fixture_copy / "optim" / "rank_0.safetensors"
    path.write_bytes(path.read_bytes()[:-100])

    checkpoint = open_checkpoint(fixture_copy)

    assert any("optim/rank_0.safetensors cannot be read" in p for p in checkpoint.problems)


def test_rank_file_replaced(fixture_copy: Path) -> None:
    model = fixture_copy / "model"
    shutil.copyfile(model / "rank_0.safetensors", model / "rank_1.safetensors")

    checkpoint = open_checkpoint(fixture_copy)

    assert any("model/rank_1.safetensors stores" in p for p in checkpoint.problems)


def test_corrupt_metadata_json(fixture_copy: Path) -> None:
    (fixture_copy / "model" / "metadata.json").write_text("{not json")

    with pytest.raises(CorruptFile) as caught:
        open_checkpoint(fixture_copy)
    assert "metadata.json" in str(caught.value)
