"""Tests of verify's bounded reading: the reopened safe_open handle and the pread path of .pt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from olmo_inspect.convert import engine, verify
from olmo_inspect.io.torch_file import iter_tensors, read_torch_file
from olmo_inspect.model import CheckpointKind
from tests.convert.convert_helpers import open_checkpoint

TENSOR_COUNT = 4
TENSOR_ELEMENTS = 256


class CountingOpener:
    """A wrapper of ``safe_open`` that counts the handles entered and exited."""

    def __init__(self) -> None:
        self.entered = 0
        self.exited = 0

    def __call__(self, path: str, framework: str) -> Any:
        opener = self

        class Context:
            def __enter__(self) -> Any:
                opener.entered += 1
                self.handle = safe_open(path, framework=framework)
                return self.handle.__enter__()

            def __exit__(self, *exc_info: object) -> None:
                opener.exited += 1
                self.handle.__exit__(*exc_info)

        return Context()


def write_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Write ``TENSOR_COUNT`` float32 tensors to ``path`` and return them."""
    tensors = {
        f"t{index}": torch.arange(TENSOR_ELEMENTS, dtype=torch.float32) + index * 1000
        for index in range(TENSOR_COUNT)
    }
    save_file(tensors, str(path))
    return tensors


def test_reader_reopens_after_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "small.safetensors"
    written = write_tensors(path)
    tensor_bytes = TENSOR_ELEMENTS * 4
    monkeypatch.setattr(verify, "VERIFY_MAP_BUDGET", tensor_bytes)
    opener = CountingOpener()

    with verify.BudgetedSafeOpen(path, opener=opener) as reader:
        values = {key: reader.get_tensor(key).clone() for key in sorted(written)}

    # The budget covers one tensor, so every read after the first opens a new handle.
    assert reader.opens == TENSOR_COUNT
    assert opener.entered == TENSOR_COUNT
    assert opener.exited == TENSOR_COUNT
    for key, value in written.items():
        assert torch.equal(values[key], value)


def test_reader_keeps_handle_within_budget(tmp_path: Path) -> None:
    path = tmp_path / "small.safetensors"
    written = write_tensors(path)
    opener = CountingOpener()

    with verify.BudgetedSafeOpen(
        path, budget=TENSOR_COUNT * TENSOR_ELEMENTS * 4, opener=opener
    ) as reader:
        keys = reader.keys()
        for key in keys:
            assert torch.equal(reader.get_tensor(key), written[key])

    assert sorted(keys) == sorted(written)
    assert reader.opens == 1
    assert opener.exited == 1


def test_verify_small_budget_passes_and_detects(
    tmp_path: Path, sample_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "VERIFY_MAP_BUDGET", 1)
    sample = sample_factory("transformers-olmo2")
    plan = engine.plan(
        open_checkpoint(sample.path),
        CheckpointKind.TRANSFORMERS,
        engine.ConvertOptions(output=tmp_path / "out", verify=False),
    )
    engine.run(plan)

    clean = engine.verify(plan)
    weights = tmp_path / "out" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0xFF
    weights.write_bytes(bytes(raw))
    damaged = engine.verify(plan)

    assert clean.ok, clean.mismatches
    assert clean.checked == len(plan.steps)
    assert not damaged.ok
    assert any("values differ" in mismatch for mismatch in damaged.mismatches)


def test_verify_pt_detects_flipped_byte(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    plan = engine.plan(
        open_checkpoint(sample.path),
        CheckpointKind.OLMO_UNSHARDED,
        engine.ConvertOptions(output=tmp_path / "out", verify=False),
    )
    engine.run(plan)
    weights = tmp_path / "out" / "model.pt"
    clean = engine.verify(plan)

    # Flip the first byte of the largest tensor, located from the file's own zip layout.
    stored = read_torch_file(weights)
    name, record = max(iter_tensors(stored.value), key=lambda item: item[1].storage.numel)
    location = stored.stored_bytes(record, weights.name)
    assert location.data_start is not None
    with weights.open("r+b") as handle:
        handle.seek(location.data_start)
        first = handle.read(1)
        handle.seek(location.data_start)
        handle.write(bytes([first[0] ^ 0xFF]))
    loaded = torch.load(weights, weights_only=True, mmap=True)
    damaged = engine.verify(plan)

    assert clean.ok, clean.mismatches
    assert clean.checked == len(plan.steps)
    assert isinstance(loaded, dict)
    assert not damaged.ok
    assert any(
        "values differ" in mismatch and name in mismatch for mismatch in damaged.mismatches
    ), damaged.mismatches
