"""Tests of the OLMo-core unsharded reader: one file, chunk files and optimizer layouts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from olmo_inspect.detect import detect
from olmo_inspect.errors import IncompleteCheckpoint, InspectError
from olmo_inspect.formats import read_checkpoint
from olmo_inspect.model import Checkpoint, CheckpointKind, TensorInfo, dtype_size


def open_checkpoint(path: Path) -> Checkpoint:
    return read_checkpoint(detect(path))


def stored_bytes(root: Path, tensor: TensorInfo) -> bytes:
    assert tensor.offset is not None and tensor.file is not None
    with (root / tensor.file).open("rb") as handle:
        handle.seek(tensor.offset)
        return handle.read(tensor.numel * dtype_size(tensor.dtype))


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def test_sample_model_and_optimizer(sample_factory: Any) -> None:
    sample = sample_factory("olmo-core-unsharded")
    checkpoint = open_checkpoint(sample.path)

    assert checkpoint.kind == CheckpointKind.OLMO_CORE_UNSHARDED
    assert checkpoint.problems == []
    assert {t.name for t in checkpoint.tensors} == set(sample.tensors)
    for tensor in checkpoint.tensors:
        assert tensor.shape == tuple(sample.tensors[tensor.name].shape)
        assert stored_bytes(sample.path, tensor) == tensor_bytes(sample.tensors[tensor.name])

    optimizer = checkpoint.optimizer
    assert {t.name for t in optimizer.tensors} == set(sample.optimizer_tensors)
    for tensor in optimizer.tensors:
        expected = sample.optimizer_tensors[tensor.name]
        assert stored_bytes(sample.path, tensor) == tensor_bytes(expected)
    roles = {info.path: info.role for info in checkpoint.files}
    assert roles == {"config.json": "config", "model.safetensors": "model", "optim.pt": "optim"}


def _state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "embeddings.weight": torch.randn(8, 4, generator=generator),
        "blocks.0.attention.w_q.weight": torch.randn(4, 4, generator=generator),
        "lm_head.w_out.weight": torch.randn(8, 4, generator=generator),
    }


def _with_config(sample_path: Path, target: Path) -> None:
    target.mkdir()
    shutil.copyfile(sample_path / "config.json", target / "config.json")


def test_chunk_files(sample_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "unsharded"
    _with_config(sample_factory("olmo-core-unsharded").path, root)
    state = _state()
    names = list(state)
    (root / "model").mkdir()
    torch.save({name: state[name] for name in names[:2]}, root / "model" / "chunk-00000.pt")
    torch.save({names[2]: state[names[2]]}, root / "model" / "chunk-00001.pt")

    checkpoint = open_checkpoint(root)

    assert checkpoint.problems == []
    assert {t.name: t.file for t in checkpoint.tensors} == {
        names[0]: "model/chunk-00000.pt",
        names[1]: "model/chunk-00000.pt",
        names[2]: "model/chunk-00001.pt",
    }
    for tensor in checkpoint.tensors:
        assert stored_bytes(root, tensor) == tensor_bytes(state[tensor.name])


def test_flattened_optimizer(sample_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "unsharded"
    _with_config(sample_factory("olmo-core-unsharded").path, root)
    state = _state()
    torch.save(state, root / "model.pt")
    exp_avg = torch.ones(8, 4)
    optim = {
        "state.embeddings.weight.exp_avg": exp_avg,
        "state.embeddings.weight.step": torch.tensor(3.0),
        "param_groups.embeddings.weight.lr": 0.125,
        "param_groups.lm_head.w_out.weight.lr": 0.125,
        "param_groups.blocks.0.attention.w_q.weight.lr": 0.5,
    }
    torch.save(optim, root / "optim.pt")

    checkpoint = open_checkpoint(root)
    optimizer = checkpoint.optimizer

    assert {t.name for t in optimizer.tensors} == {
        "embeddings.weight.exp_avg",
        "embeddings.weight.step",
    }
    assert optimizer.state_keys == ["exp_avg", "step"]
    assert optimizer.param_groups == [
        {"lr": 0.125, "param_names": ["embeddings.weight", "lm_head.w_out.weight"]},
        {"lr": 0.5, "param_names": ["blocks.0.attention.w_q.weight"]},
    ]
    tensor = next(t for t in optimizer.tensors if t.name == "embeddings.weight.exp_avg")
    assert stored_bytes(root, tensor) == tensor_bytes(exp_avg)


def test_empty_model_folder(sample_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "unsharded"
    _with_config(sample_factory("olmo-core-unsharded").path, root)
    (root / "model").mkdir()

    with pytest.raises(IncompleteCheckpoint) as caught:
        open_checkpoint(root)
    assert "model.safetensors" in str(caught.value)


def test_truncated_model_file(sample_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "unsharded"
    _with_config(sample_factory("olmo-core-unsharded").path, root)
    torch.save(_state(), root / "model.pt")
    raw = (root / "model.pt").read_bytes()
    (root / "model.pt").write_bytes(raw[: len(raw) - 300])

    with pytest.raises(InspectError) as caught:
        open_checkpoint(root)
    assert "model.pt" in str(caught.value)
