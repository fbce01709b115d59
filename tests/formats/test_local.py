"""Tests of the ``local`` reader on upstream fixtures and on real FSDP flat-parameter rank files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.fsdp._flat_param import _ShardParamInfo

from olmo_inspect.detect import detect
from olmo_inspect.errors import InspectError
from olmo_inspect.formats import local
from olmo_inspect.model import Checkpoint, CheckpointKind, TensorInfo

FIXTURE = "olmo2-sharded-local"
SAMPLE = "olmo2-sharded-local"
WORLD_SIZE = 3

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def open_checkpoint(path: Path, deep: bool = False) -> Checkpoint:
    detection = detect(path)
    assert detection.kind == CheckpointKind.OLMO_SHARDED_LOCAL
    return local.read(detection, deep=deep)


def read_flat_values(root: Path, tensor: TensorInfo) -> torch.Tensor:
    """Assemble ``tensor`` from the bytes its flat pieces' ``data`` points at."""
    dtype = TORCH_DTYPES[tensor.dtype]
    itemsize = torch.empty((), dtype=dtype).element_size()
    flat = torch.zeros(tensor.numel, dtype=dtype)
    for piece in tensor.shards:
        data = piece.data
        assert data is not None
        assert data.data_start is not None
        assert piece.flat_range is not None
        with (root / data.file).open("rb") as handle:
            handle.seek(data.data_start + data.storage_offset * itemsize)
            raw = bytearray(handle.read(piece.numel * itemsize))
        start, end = piece.flat_range
        flat[start:end] = torch.frombuffer(raw, dtype=dtype)
    return flat.reshape(tensor.shape)


def read_plain_values(root: Path, tensor: TensorInfo) -> torch.Tensor:
    dtype = TORCH_DTYPES[tensor.dtype]
    assert tensor.data is not None and tensor.offset is not None
    itemsize = torch.empty((), dtype=dtype).element_size()
    with (root / tensor.data.file).open("rb") as handle:
        handle.seek(tensor.offset)
        raw = bytearray(handle.read(max(tensor.numel, 1) * itemsize))
    return torch.frombuffer(raw, dtype=dtype).reshape(tensor.shape)


def load_own_rank_file(path: Path) -> Any:
    """Load a model rank file this test session wrote, allowing FSDP's _ShardParamInfo."""
    with torch.serialization.safe_globals([_ShardParamInfo]):
        return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def sample(sample_factory: Any) -> Any:
    return sample_factory(SAMPLE, world_size=WORLD_SIZE)


@pytest.fixture
def sample_copy(sample: Any, tmp_path: Path) -> Path:
    """Return a private copy of the sample directory that a test may break."""
    target = tmp_path / "step1"
    shutil.copytree(sample.path, target)
    return target


def test_fixture_matches_ground_truth(fixtures_dir: Path) -> None:
    folder = fixtures_dir / FIXTURE
    truth = json.loads((folder / "ground_truth.json").read_text())
    root = folder / truth["checkpoint_path"]

    checkpoint = open_checkpoint(root)

    assert checkpoint.problems == []
    assert checkpoint.complete
    assert checkpoint.world_size == truth["world_size"]
    assert {t.name: (list(t.shape), t.dtype) for t in checkpoint.tensors} == {
        name: (spec["shape"], spec["dtype"]) for name, spec in truth["tensors"].items()
    }
    for tensor in checkpoint.tensors:
        expected = [
            (
                shard["rank"],
                shard["file"],
                shard["numel_in_shard"],
                [shard["intra_param_start_idx"], shard["intra_param_end_idx"] + 1],
            )
            for shard in truth["shards"][tensor.name]
            if shard["in_shard"]
        ]
        found = [
            (piece.rank, piece.file, piece.numel, list(piece.flat_range or ()))
            for piece in tensor.shards
        ]
        assert found == expected, tensor.name


def test_fixture_piece_offsets_follow_offset_in_shard(fixtures_dir: Path) -> None:
    folder = fixtures_dir / FIXTURE
    truth = json.loads((folder / "ground_truth.json").read_text())
    root = folder / truth["checkpoint_path"]

    checkpoint = open_checkpoint(root)

    for tensor in checkpoint.tensors:
        held = [shard for shard in truth["shards"][tensor.name] if shard["in_shard"]]
        for piece, shard in zip(tensor.shards, held, strict=True):
            assert piece.data is not None
            assert piece.data.storage_offset == shard["offset_in_shard"], tensor.name


def test_fixture_details_optimizer_and_train_state(fixtures_dir: Path) -> None:
    folder = fixtures_dir / FIXTURE
    truth = json.loads((folder / "ground_truth.json").read_text())
    root = folder / truth["checkpoint_path"]

    checkpoint = open_checkpoint(root)

    assert checkpoint.details["flat_params"] == truth["details"]["flat_params"]
    state = truth["details"]["train_state"]
    assert checkpoint.train_state is not None
    assert checkpoint.train_state.step == state["global_step"]
    assert checkpoint.train_state.tokens_seen == state["global_train_tokens_seen"]
    assert sorted(checkpoint.train_state.fields) == state["keys"]

    optimizer = checkpoint.optimizer
    assert optimizer is not None
    expected = {f"{name}.{key}" for name in truth["tensors"] for key in ("exp_avg", "exp_avg_sq")}
    sharded = {tensor.name: tensor for tensor in optimizer.tensors if tensor.shards}
    assert set(sharded) == expected
    for name, tensor in sharded.items():
        param = name.rsplit(".", 1)[0]
        assert list(tensor.shape) == truth["tensors"][param]["shape"]
        assert [piece.flat_range for piece in tensor.shards] == [
            piece.flat_range for piece in checkpoint.tensor(param).shards
        ]

    expected_files = {
        entry["path"].removeprefix("step3/"): entry["bytes"]
        for entry in truth["files"]
        if entry["path"].startswith("step3/")
    }
    assert {info.path: info.bytes for info in checkpoint.files} == expected_files


def test_sample_tensors_match_writer(sample: Any) -> None:
    checkpoint = open_checkpoint(sample.path)

    assert checkpoint.problems == []
    assert checkpoint.world_size == WORLD_SIZE
    assert sorted(t.name for t in checkpoint.tensors) == sorted(sample.tensors)
    for tensor in checkpoint.tensors:
        expected = sample.tensors[tensor.name]
        assert tensor.shape == tuple(expected.shape)
        assert torch.equal(read_flat_values(sample.path, tensor), expected), tensor.name


def test_sample_optimizer_matches_writer(sample: Any) -> None:
    checkpoint = open_checkpoint(sample.path)

    optimizer = checkpoint.optimizer
    assert optimizer is not None
    assert sorted(t.name for t in optimizer.tensors) == sorted(sample.optimizer_tensors)
    for tensor in optimizer.tensors:
        expected = sample.optimizer_tensors[tensor.name]
        if tensor.shards:
            values = read_flat_values(sample.path, tensor)
        else:
            values = read_plain_values(sample.path, tensor)
        assert torch.equal(values, expected.reshape(tensor.shape)), tensor.name
    assert [group["lr"] for group in optimizer.param_groups] == [
        sample.config["optimizer"]["learning_rate"]
    ] * len(optimizer.param_groups)
    assert optimizer.files == [f"optim/rank{rank}.pt" for rank in range(WORLD_SIZE)]


def test_sample_files_have_roles_and_ranks(sample: Any) -> None:
    checkpoint = open_checkpoint(sample.path)

    by_path = {info.path: info for info in checkpoint.files}
    for rank in range(WORLD_SIZE):
        for folder in ("model", "optim", "train"):
            info = by_path[f"{folder}/rank{rank}.pt"]
            assert (info.role, info.rank) == (folder, rank)
            assert info.bytes == (sample.path / info.path).stat().st_size
    assert by_path["metadata.yaml"].role == "metadata"
    model_pieces = sum(
        1
        for tensor in checkpoint.tensors
        for piece in tensor.shards
        if piece.file == "model/rank0.pt"
    )
    assert by_path["model/rank0.pt"].tensors == model_pieces


def _old_format_handle(handle: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a torch >= 2.1 handle as torch <= 2.0.1 wrote it (indices and offsets)."""
    infos = handle.pop("flat_param._shard_param_infos")
    handle.pop("flat_param._numels_with_padding", None)
    held = [index for index, info in enumerate(infos) if info.in_shard]
    handle["flat_param._shard_indices"] = (held[0], held[-1]) if held else (0, 0)
    handle["flat_param._shard_param_offsets"] = [
        (infos[index].intra_param_start_idx, infos[index].intra_param_end_idx) for index in held
    ]
    return handle


def test_old_torch_shard_offsets_give_same_pieces(sample: Any, sample_copy: Path) -> None:
    for rank in range(WORLD_SIZE):
        path = sample_copy / "model" / f"rank{rank}.pt"
        state = load_own_rank_file(path)
        for module in state["modules"]:
            for handle in module["handles"]:
                # The old layout had no alignment padding, so padding may only trail the params.
                numels = tuple(handle["flat_param._numels"])
                padded = tuple(handle["flat_param._numels_with_padding"])
                assert padded[: len(numels)] == numels
                _old_format_handle(handle)
        torch.save(state, path)

    new = open_checkpoint(sample.path)
    old = open_checkpoint(sample_copy)

    assert old.problems == []
    for before, after in zip(new.tensors, old.tensors, strict=True):
        assert before.name == after.name
        assert [p.to_json() for p in before.shards] == [p.to_json() for p in after.shards]
        assert [p.data.storage_offset for p in before.shards] == [
            p.data.storage_offset for p in after.shards
        ]
        assert torch.equal(read_flat_values(sample_copy, after), sample.tensors[after.name])


def test_missing_model_rank_names_tensors(sample_copy: Path) -> None:
    full = open_checkpoint(sample_copy)
    (sample_copy / "model" / "rank1.pt").unlink()

    checkpoint = open_checkpoint(sample_copy)

    assert not checkpoint.complete
    assert "model/rank1.pt is missing; its pieces of every tensor are lost" in checkpoint.problems
    held = {t.name for t in full.tensors if any(p.rank == 1 and p.numel for p in t.shards)}
    assert held
    for name in held:
        assert any(problem.startswith(f"{name}: ") for problem in checkpoint.problems), name


def test_missing_optim_and_train_rank(sample_copy: Path) -> None:
    (sample_copy / "optim" / "rank2.pt").unlink()
    (sample_copy / "train" / "rank1.pt").unlink()

    checkpoint = open_checkpoint(sample_copy)

    assert not checkpoint.complete
    assert "optim/rank2.pt is missing; its optimizer state pieces are lost" in checkpoint.problems
    assert "trainer state files are missing: train/rank1.pt" in checkpoint.problems


@pytest.mark.parametrize("folder", ["model", "optim"])
def test_truncated_rank_file_is_a_problem(sample_copy: Path, folder: str) -> None:
    path = sample_copy / folder / "rank1.pt"
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)

    checkpoint = open_checkpoint(sample_copy)

    assert not checkpoint.complete
    assert any(
        problem.startswith(f"{folder}/rank1.pt cannot be read") for problem in checkpoint.problems
    )


def test_rank_file_replaced_by_another_rank(sample_copy: Path) -> None:
    shutil.copyfile(sample_copy / "model" / "rank0.pt", sample_copy / "model" / "rank1.pt")

    checkpoint = open_checkpoint(sample_copy)

    assert not checkpoint.complete
    assert any(
        problem.startswith("model/rank1.pt was written as rank0.pt")
        for problem in checkpoint.problems
    )
    overlapping = [problem for problem in checkpoint.problems if "stored twice" in problem]
    assert overlapping, "rank 0's pieces listed twice overlap"


def test_metadata_world_size_larger_than_files(sample_copy: Path) -> None:
    (sample_copy / "metadata.yaml").write_text(f"world_size: {WORLD_SIZE + 1}\n")

    checkpoint = open_checkpoint(sample_copy)

    assert checkpoint.world_size == WORLD_SIZE + 1
    assert f"model/rank{WORLD_SIZE}.pt is missing; its pieces of every tensor are lost" in (
        checkpoint.problems
    )
    assert f"optim/rank{WORLD_SIZE}.pt is missing; its optimizer state pieces are lost" in (
        checkpoint.problems
    )


def test_unreadable_metadata_falls_back_to_rank_files(sample_copy: Path) -> None:
    (sample_copy / "metadata.yaml").write_text("world_size: [unclosed\n")

    checkpoint = open_checkpoint(sample_copy)

    assert checkpoint.world_size == WORLD_SIZE
    assert any(
        problem.startswith("metadata.yaml cannot be read") for problem in checkpoint.problems
    )
    assert len(checkpoint.tensors) == len(open_checkpoint(checkpoint.path).tensors)


def test_no_readable_model_rank_raises_one_line(sample_copy: Path) -> None:
    for rank in range(WORLD_SIZE):
        (sample_copy / "model" / f"rank{rank}.pt").write_bytes(b"not a torch file")

    with pytest.raises(InspectError) as raised:
        open_checkpoint(sample_copy)

    assert "\n" not in str(raised.value)
    assert "model" in str(raised.value)
