"""Unsharded readers against the checkpoints written by upstream OLMo and its converters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olmo_inspect.inspect import open_checkpoint, open_path
from olmo_inspect.model import CheckpointKind, RunFolder

KIND_NAMES = {
    "olmo_unsharded": CheckpointKind.OLMO_UNSHARDED,
    "transformers": CheckpointKind.TRANSFORMERS,
    "hf_olmo": CheckpointKind.HF_OLMO,
}
FOLDERS = ["olmo1-unsharded-ddp", "hf-olmo-converted", "hf-olmo-package"]


def load_truth(folder: Path) -> dict:
    return json.loads((folder / "ground_truth.json").read_text())


@pytest.mark.parametrize("folder_name", FOLDERS)
def test_upstream_checkpoint_matches_ground_truth(fixtures_dir: Path, folder_name: str) -> None:
    folder = fixtures_dir / folder_name
    truth = load_truth(folder)
    checkpoint = open_checkpoint(folder / truth["checkpoint_path"])

    assert checkpoint.kind == KIND_NAMES[truth["kind"]]
    assert checkpoint.complete, checkpoint.problems
    found = {tensor.name: tensor for tensor in checkpoint.tensors}
    assert set(found) == set(truth["tensors"])
    for name, expected in truth["tensors"].items():
        assert list(found[name].shape) == expected["shape"], name
        assert found[name].dtype == expected["dtype"], name
    assert checkpoint.nbytes == truth["total_bytes"]


def test_upstream_train_state(fixtures_dir: Path) -> None:
    checkpoint = open_checkpoint(fixtures_dir / "olmo1-unsharded-ddp" / "step3-unsharded")

    assert checkpoint.train_state is not None
    assert checkpoint.step == 3
    assert checkpoint.train_state.fields["world_size"] == 2
    assert checkpoint.optimizer is not None
    assert checkpoint.optimizer.param_groups[0]["lr"] > 0
    names = {tensor.name for tensor in checkpoint.optimizer.tensors}
    assert "transformer.wte.weight.exp_avg" in names


def test_upstream_run_folder_marks_latest(fixtures_dir: Path) -> None:
    result = open_path(fixtures_dir / "olmo1-unsharded-ddp")

    assert isinstance(result, RunFolder)
    assert [entry.path.name for entry in result.checkpoints] == ["step3-unsharded"]
    assert result.checkpoints[0].latest
    assert result.checkpoints[0].complete
    assert result.checkpoints[0].step == 3


def test_upstream_latest_link_opens_its_target(fixtures_dir: Path) -> None:
    checkpoint = open_checkpoint(fixtures_dir / "olmo1-unsharded-ddp" / "latest-unsharded")
    assert checkpoint.path.name == "step3-unsharded"
