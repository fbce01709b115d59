"""Readers of the unsharded kinds against checkpoints written by the real libraries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from olmo_inspect.inspect import open_checkpoint
from olmo_inspect.model import Checkpoint, CheckpointKind, TensorInfo
from olmo_inspect.samples import Sample

UNSHARDED_SAMPLES = {
    "olmo1-unsharded": CheckpointKind.OLMO_UNSHARDED,
    "olmo2-unsharded-safetensors": CheckpointKind.OLMO_UNSHARDED,
    "transformers-olmo": CheckpointKind.TRANSFORMERS,
    "transformers-olmo2": CheckpointKind.TRANSFORMERS,
    "transformers-olmo3": CheckpointKind.TRANSFORMERS,
    "transformers-olmoe": CheckpointKind.TRANSFORMERS,
    "transformers-olmo2-sharded": CheckpointKind.TRANSFORMERS,
    "transformers-olmo2-bin": CheckpointKind.TRANSFORMERS,
    "transformers-olmo2-bin-sharded": CheckpointKind.TRANSFORMERS,
    "hf-olmo": CheckpointKind.HF_OLMO,
}


@pytest.fixture(scope="module")
def samples(sample_factory) -> dict[str, Sample]:
    return {name: sample_factory(name) for name in UNSHARDED_SAMPLES}


def stored_bytes(checkpoint: Checkpoint, tensor: TensorInfo) -> bytes:
    assert tensor.offset is not None, tensor.name
    with (checkpoint.path / tensor.file).open("rb") as handle:
        return os.pread(handle.fileno(), tensor.nbytes, tensor.offset)


def torch_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("name", sorted(UNSHARDED_SAMPLES))
def test_reader_matches_written_tensors(samples: dict[str, Sample], name: str) -> None:
    sample = samples[name]
    checkpoint = open_checkpoint(sample.path)
    found = {tensor.name: tensor for tensor in checkpoint.tensors}

    assert checkpoint.kind == UNSHARDED_SAMPLES[name]
    assert checkpoint.problems == []
    assert checkpoint.complete
    assert set(found) == set(sample.tensors)
    for tensor_name, expected in sample.tensors.items():
        tensor = found[tensor_name]
        assert tensor.shape == tuple(expected.shape), tensor_name
        assert tensor.dtype == str(expected.dtype).removeprefix("torch."), tensor_name
        assert stored_bytes(checkpoint, tensor) == torch_bytes(expected), tensor_name


@pytest.mark.parametrize("name", ["olmo1-unsharded", "olmo2-unsharded-safetensors"])
def test_optimizer_and_train_state(samples: dict[str, Sample], name: str) -> None:
    sample = samples[name]
    checkpoint = open_checkpoint(sample.path)

    assert checkpoint.optimizer is not None
    found = {tensor.name: tensor for tensor in checkpoint.optimizer.tensors}
    assert set(found) == set(sample.optimizer_tensors)
    for tensor_name, expected in sample.optimizer_tensors.items():
        assert found[tensor_name].shape == tuple(expected.shape), tensor_name
    assert checkpoint.optimizer.param_groups, "param groups are shown"
    assert "lr" in checkpoint.optimizer.param_groups[0]

    assert sample.train_state is not None
    assert checkpoint.train_state is not None
    assert checkpoint.step == sample.train_state["global_step"]
    assert checkpoint.train_state.tokens_seen == sample.train_state["global_train_tokens_seen"]


def test_encoded_safetensors_keep_stored_keys(samples: dict[str, Sample]) -> None:
    sample = samples["olmo2-unsharded-safetensors"]
    checkpoint = open_checkpoint(sample.path)

    assert sample.stored_keys, "the sample stores encoded keys"
    for tensor in checkpoint.tensors:
        assert tensor.stored_key == sample.stored_keys[tensor.name]
    assert any("encoded keys" in line for line in checkpoint.evidence)


def test_index_naming_missing_shard_is_incomplete(
    samples: dict[str, Sample], tmp_path: Path
) -> None:
    source = samples["transformers-olmo2-sharded"].path
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in source.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    removed = sorted(set(index["weight_map"].values()))[-1]
    (copy / removed).unlink()

    checkpoint = open_checkpoint(copy)

    assert not checkpoint.complete
    assert any(removed in problem and "missing" in problem for problem in checkpoint.problems)


def test_single_file_is_a_bare_state_dict(samples: dict[str, Sample]) -> None:
    sample = samples["olmo1-unsharded"]
    checkpoint = open_checkpoint(sample.path / "model.pt")

    assert checkpoint.kind == CheckpointKind.OLMO_UNSHARDED
    assert {tensor.name for tensor in checkpoint.tensors} == set(sample.tensors)
    assert checkpoint.files[0].path == "model.pt"
