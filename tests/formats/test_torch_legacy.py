"""Tests of the torch_legacy reader on upstream fixtures and on real ShardedTensor rank files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from olmo_inspect.detect import detect
from olmo_inspect.errors import InspectError
from olmo_inspect.formats import torch_legacy
from olmo_inspect.model import Checkpoint, CheckpointKind, TensorInfo
from olmo_inspect.samples import write_torch_legacy

FIXTURE = "olmo1-sharded-torch-legacy"
SAMPLE = "olmo1-sharded-torch-legacy"
WORLD_SIZE = 3

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def open_checkpoint(path: Path, deep: bool = False) -> Checkpoint:
    detection = detect(path)
    assert detection.kind == CheckpointKind.OLMO_SHARDED_TORCH_LEGACY
    return torch_legacy.read(detection, deep=deep)


def read_piece_values(root: Path, tensor: TensorInfo) -> torch.Tensor:
    """Assemble ``tensor`` from the bytes its pieces' ``data`` points at."""
    dtype = TORCH_DTYPES[tensor.dtype]
    full = torch.zeros(tensor.shape, dtype=dtype)
    for piece in tensor.shards:
        data = piece.data
        assert data is not None and data.data_start is not None, piece
        assert piece.shape is not None and piece.offsets is not None
        assert data.is_contiguous(piece.shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        with (root / data.file).open("rb") as handle:
            handle.seek(data.data_start + data.storage_offset * itemsize)
            raw = bytearray(handle.read(piece.numel * itemsize))
        values = torch.frombuffer(raw, dtype=dtype).reshape(piece.shape)
        index = tuple(
            slice(offset, offset + size)
            for offset, size in zip(piece.offsets, piece.shape, strict=True)
        )
        full[index] = values
    return full


def read_plain_values(root: Path, tensor: TensorInfo) -> torch.Tensor:
    """Read an unsharded tensor (an optimizer ``step``) from the bytes ``data`` points at."""
    dtype = TORCH_DTYPES[tensor.dtype]
    assert tensor.data is not None and tensor.offset is not None
    itemsize = torch.empty((), dtype=dtype).element_size()
    with (root / tensor.data.file).open("rb") as handle:
        handle.seek(tensor.offset)
        raw = bytearray(handle.read(max(tensor.numel, 1) * itemsize))
    return torch.frombuffer(raw, dtype=dtype).reshape(tensor.shape)


@pytest.fixture(scope="module")
def sample(sample_factory: Any) -> Any:
    return sample_factory(SAMPLE, world_size=WORLD_SIZE)


@pytest.fixture
def sample_copy(sample: Any, tmp_path: Path) -> Path:
    """Return a private copy of the sample directory that a test may break."""
    target = tmp_path / "step1"
    shutil.copytree(sample.path, target)
    return target


@pytest.mark.parametrize("deep", [False, True])
def test_fixture_matches_ground_truth(fixtures_dir: Path, deep: bool) -> None:
    folder = fixtures_dir / FIXTURE
    truth = json.loads((folder / "ground_truth.json").read_text())
    root = folder / truth["checkpoint_path"]

    checkpoint = open_checkpoint(root, deep=deep)

    assert checkpoint.problems == []
    assert checkpoint.complete
    assert checkpoint.world_size == truth["world_size"]
    assert {t.name: (list(t.shape), t.dtype) for t in checkpoint.tensors} == {
        name: (spec["shape"], spec["dtype"]) for name, spec in truth["tensors"].items()
    }
    for tensor in checkpoint.tensors:
        expected = [
            (shard["rank"], shard["file"], shard["offsets"], shard["sizes"])
            for shard in truth["shards"][tensor.name]
        ]
        found = [
            (piece.rank, piece.file, list(piece.offsets or ()), list(piece.shape or ()))
            for piece in tensor.shards
        ]
        assert found == expected, tensor.name
        assert all(piece.numel == piece.data.storage_nbytes // 4 for piece in tensor.shards)


def test_fixture_files_and_train_state(fixtures_dir: Path) -> None:
    folder = fixtures_dir / FIXTURE
    truth = json.loads((folder / "ground_truth.json").read_text())
    root = folder / truth["checkpoint_path"]
    config = yaml.safe_load((root / "config.yaml").read_text())

    checkpoint = open_checkpoint(root)

    prefix = truth["checkpoint_path"] + "/"
    expected_files = {
        entry["path"].removeprefix(prefix): entry["bytes"]
        for entry in truth["files"]
        if entry["path"].startswith(prefix)
    }
    assert {info.path: info.bytes for info in checkpoint.files} == expected_files
    assert {info.path: info.rank for info in checkpoint.files if info.rank is not None} == {
        "rank0.pt": 0,
        "rank1.pt": 1,
    }
    top_keys = set(truth["details"]["rank_file_top_level_keys"]["rank0.pt"])
    assert checkpoint.train_state is not None
    assert set(checkpoint.train_state.fields) == top_keys - {"model", "optim"}
    assert checkpoint.train_state.step == config_step(checkpoint)
    assert checkpoint.optimizer is not None
    assert [group["lr"] for group in checkpoint.optimizer.param_groups] == [
        config["optimizer"]["learning_rate"]
    ] * len(checkpoint.optimizer.param_groups)


def config_step(checkpoint: Checkpoint) -> int:
    """Return the step the fixture's folder name gives (``step3``)."""
    return int(checkpoint.path.name.removeprefix("step"))


def test_fixture_shallow_data_matches_deep(fixtures_dir: Path) -> None:
    root = fixtures_dir / FIXTURE / "step3"

    shallow = open_checkpoint(root, deep=False)
    deep = open_checkpoint(root, deep=True)

    for fast, full in zip(shallow.tensors, deep.tensors, strict=True):
        assert [piece.data for piece in fast.shards] == [piece.data for piece in full.shards]
        assert [piece.key for piece in fast.shards] == [piece.key for piece in full.shards]


def test_sample_tensors_match_writer(sample: Any) -> None:
    checkpoint = open_checkpoint(sample.path)

    assert checkpoint.problems == []
    assert checkpoint.world_size == WORLD_SIZE
    assert sorted(t.name for t in checkpoint.tensors) == sorted(sample.tensors)
    for tensor in checkpoint.tensors:
        expected = sample.tensors[tensor.name]
        assert tensor.shape == tuple(expected.shape)
        assert tensor.dtype == str(expected.dtype).removeprefix("torch.")
        assert torch.equal(read_piece_values(sample.path, tensor), expected), tensor.name


def test_sample_optimizer_matches_writer(sample: Any) -> None:
    checkpoint = open_checkpoint(sample.path)

    optimizer = checkpoint.optimizer
    assert optimizer is not None
    assert sorted(t.name for t in optimizer.tensors) == sorted(sample.optimizer_tensors)
    assert optimizer.state_keys == sorted(
        {name.rsplit(".", 1)[1] for name in sample.optimizer_tensors}
    )
    for tensor in optimizer.tensors:
        expected = sample.optimizer_tensors[tensor.name]
        if tensor.shards:
            values = read_piece_values(sample.path, tensor)
        else:
            values = read_plain_values(sample.path, tensor)
        assert torch.equal(values, expected), tensor.name
    assert [group["lr"] for group in optimizer.param_groups] == [
        sample.config["optimizer"]["learning_rate"]
    ] * len(optimizer.param_groups)


def test_sample_train_state_and_files(sample: Any) -> None:
    checkpoint = open_checkpoint(sample.path)

    assert checkpoint.train_state is not None
    for key, value in sample.train_state.items():
        assert checkpoint.train_state.fields[key] == value, key
    ranks = {info.path: info.rank for info in checkpoint.files if info.rank is not None}
    assert ranks == {f"rank{rank}.pt": rank for rank in range(WORLD_SIZE)}
    for info in checkpoint.files:
        assert info.bytes == (sample.path / info.path).stat().st_size


def test_deep_read_gives_same_pieces(sample: Any) -> None:
    shallow = open_checkpoint(sample.path, deep=False)
    deep = open_checkpoint(sample.path, deep=True)

    assert deep.problems == []
    assert deep.details["other_ranks_checked_by"] == "pickle"
    for fast, full in zip(shallow.tensors, deep.tensors, strict=True):
        assert [p.to_json() for p in fast.shards] == [p.to_json() for p in full.shards]
        assert [p.data for p in fast.shards] == [p.data for p in full.shards]


@pytest.mark.parametrize("deep", [False, True])
def test_missing_rank_file_is_named(sample: Any, sample_copy: Path, deep: bool) -> None:
    (sample_copy / "rank1.pt").unlink()

    checkpoint = open_checkpoint(sample_copy, deep=deep)

    assert not checkpoint.complete
    assert checkpoint.world_size == WORLD_SIZE
    missing = [p for p in checkpoint.problems if p.startswith("rank1.pt is missing")]
    assert len(missing) == 1
    assert checkpoint.optimizer is not None
    held = sorted(
        tensor.name
        for tensor in [*checkpoint.tensors, *checkpoint.optimizer.tensors]
        if any(piece.rank == 1 and piece.numel > 0 for piece in tensor.shards)
    )
    assert held
    for name in held[: torch_legacy.MAX_NAMES_IN_PROBLEM]:
        assert name in missing[0]
    hidden = len(held) - torch_legacy.MAX_NAMES_IN_PROBLEM
    if hidden > 0:
        assert f"and {hidden} more;" in missing[0]


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("deep", [False, True])
def test_truncated_rank_file_is_a_problem(sample_copy: Path, rank: int, deep: bool) -> None:
    path = sample_copy / f"rank{rank}.pt"
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 2)

    checkpoint = open_checkpoint(sample_copy, deep=deep)

    assert not checkpoint.complete
    assert any(
        problem.startswith(f"rank{rank}.pt cannot be read") for problem in checkpoint.problems
    )
    assert checkpoint.tensors, "the metadata repeated in the other rank files still lists tensors"
    assert checkpoint.world_size == WORLD_SIZE


@pytest.mark.parametrize("deep", [False, True])
def test_rank_file_replaced_by_another_rank(sample_copy: Path, deep: bool) -> None:
    shutil.copyfile(sample_copy / "rank0.pt", sample_copy / "rank1.pt")

    checkpoint = open_checkpoint(sample_copy, deep=deep)

    assert not checkpoint.complete
    assert any(
        problem.startswith("rank1.pt was written as rank0.pt") for problem in checkpoint.problems
    )


def test_rank0_replaced_by_rank1(sample_copy: Path) -> None:
    shutil.copyfile(sample_copy / "rank1.pt", sample_copy / "rank0.pt")

    checkpoint = open_checkpoint(sample_copy)

    assert any(
        problem.startswith("rank0.pt holds local shards that do not match")
        for problem in checkpoint.problems
    )


def test_extra_rank_file_is_a_problem(sample_copy: Path) -> None:
    shutil.copyfile(sample_copy / "rank0.pt", sample_copy / f"rank{WORLD_SIZE}.pt")

    checkpoint = open_checkpoint(sample_copy)

    assert checkpoint.world_size == WORLD_SIZE
    assert any(f"rank{WORLD_SIZE}.pt exist" in problem for problem in checkpoint.problems)


def test_no_readable_rank_file_raises_one_line(sample_copy: Path) -> None:
    for rank in range(WORLD_SIZE):
        (sample_copy / f"rank{rank}.pt").write_bytes(b"PK\x03\x04 not a zip")

    with pytest.raises(InspectError) as raised:
        open_checkpoint(sample_copy)

    assert "\n" not in str(raised.value)
    assert "rank" in str(raised.value)


@pytest.fixture(scope="module")
def uneven(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """Write rank files where a one-row tensor leaves ranks 1 and 2 without a shard of it."""
    out_dir = tmp_path_factory.mktemp("uneven") / "step1"
    generator = torch.Generator().manual_seed(0)
    model = {
        "row": torch.randn(1, 4, generator=generator),
        "wide": torch.randn(7, 5, generator=generator),
        "norm": torch.randn(5, generator=generator),
    }
    extra = {"global_step": 1, "world_size": WORLD_SIZE + 2}
    write_torch_legacy(out_dir, {"model": model}, WORLD_SIZE, extra=extra)
    (out_dir / "config.yaml").write_text("sharded_checkpointer: torch_legacy\n")
    return out_dir, model


def test_uneven_chunks_list_only_held_pieces(uneven: tuple[Path, dict[str, torch.Tensor]]) -> None:
    root, _ = uneven

    checkpoint = open_checkpoint(root)

    row = checkpoint.tensor("row")
    assert [(piece.rank, piece.offsets, piece.shape) for piece in row.shards] == [
        (0, (0, 0), (1, 4))
    ]
    wide = checkpoint.tensor("wide")
    assert [(piece.rank, piece.offsets, piece.shape) for piece in wide.shards] == [
        (0, (0, 0), (3, 5)),
        (1, (3, 0), (3, 5)),
        (2, (6, 0), (1, 5)),
    ]
    assert not any(
        problem.startswith("row") or problem.startswith("wide") for problem in checkpoint.problems
    )
    assert any("byte offsets are unknown" in note for note in checkpoint.notes)
    other_ranks = [piece for piece in wide.shards if piece.rank != 0]
    assert all(piece.data is None for piece in other_ranks)


def test_uneven_chunks_deep_read_finds_bytes(uneven: tuple[Path, dict[str, torch.Tensor]]) -> None:
    root, model = uneven

    checkpoint = open_checkpoint(root, deep=True)

    for tensor in checkpoint.tensors:
        assert torch.equal(read_piece_values(root, tensor), model[tensor.name]), tensor.name


def test_state_world_size_disagreement_is_a_problem(
    uneven: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    root, _ = uneven

    checkpoint = open_checkpoint(root)

    assert checkpoint.world_size == WORLD_SIZE
    assert any(
        problem == f"rank0.pt stores world_size {WORLD_SIZE + 2}, but the rank files and shard "
        f"metadata give {WORLD_SIZE}"
        for problem in checkpoint.problems
    )


def test_pieces_in_a_missing_rank_file_are_flagged(fixtures_dir: Path, tmp_path: Path) -> None:
    from olmo_inspect.inspect import open_checkpoint

    source = fixtures_dir / "olmo1-sharded-torch-legacy" / "step3"
    copy = tmp_path / "step3"
    copy.mkdir()
    for path in source.iterdir():
        if path.name != "rank1.pt":
            (copy / path.name).write_bytes(path.read_bytes())

    checkpoint = open_checkpoint(copy)

    for tensor in checkpoint.tensors:
        flags = {piece.rank: piece.missing for piece in tensor.shards if piece.numel}
        assert flags == {0: False, 1: True}, tensor.name
    missing_files = [info.path for info in checkpoint.files if info.missing]
    assert missing_files == ["rank1.pt"]
