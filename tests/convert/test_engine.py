"""Tests for the conversion engine: plans, runs, verification, refusals and interruptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from convert_helpers import convert, digest_tree, entries, open_checkpoint
from safetensors.torch import load_file

from olmo_inspect.convert import engine
from olmo_inspect.convert.layout import MANIFEST_FILE, IdentityResult, Method, identity_mapping
from olmo_inspect.errors import ConversionError, UsageError
from olmo_inspect.model import CheckpointKind
from olmo_inspect.tensors import read_tensor

REPO_ROOT = Path(__file__).resolve().parents[2]
# How long the killed-process test waits for the child to reach the middle of its run.
CHILD_START_TIMEOUT_S = 120


def test_olmo_to_transformers_matches_upstream(tmp_path: Path, fixtures_dir: Path) -> None:
    source = fixtures_dir / "olmo1-unsharded-ddp" / "step3-unsharded"
    reference = fixtures_dir / "hf-olmo-converted"
    before = digest_tree(source)

    result = convert(source, CheckpointKind.TRANSFORMERS, tmp_path / "hf", verify_logits=True)

    ours = load_file(tmp_path / "hf" / "model.safetensors")
    theirs = load_file(reference / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    upstream = json.loads((reference / "config.json").read_text())
    for field in (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "tie_word_embeddings",
        "eos_token_id",
    ):
        assert config[field] == upstream[field], field
    assert result.verify is not None
    assert result.verify.ok
    assert result.verify.logits is not None
    assert result.verify.logits["max_abs_difference"] == 0.0
    assert result.byte_copies == result.tensors
    assert digest_tree(source) == before


def test_row_slices_are_byte_copies(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    checkpoint = open_checkpoint(sample.path)

    plan = engine.plan(
        checkpoint, CheckpointKind.TRANSFORMERS, engine.ConvertOptions(output=tmp_path / "hf")
    )
    cast = engine.plan(
        checkpoint,
        CheckpointKind.TRANSFORMERS,
        engine.ConvertOptions(output=tmp_path / "hf", dtype="bfloat16"),
    )

    sliced = [step for step in plan.steps if any(p.rows is not None for p in step.sources)]
    assert sliced
    assert all(step.method == Method.COPY for step in sliced)
    assert all(step.method == Method.MATERIALISE for step in cast.steps)
    assert all("cast" in step.why for step in cast.steps)


UNSHARD_CASES = [
    ("olmo1-sharded-torch-legacy", CheckpointKind.OLMO_UNSHARDED),
    ("olmo1-sharded-torch-new", CheckpointKind.OLMO_UNSHARDED),
    ("olmo2-sharded-local", CheckpointKind.OLMO_UNSHARDED),
    ("olmo2-sharded-olmo-core", CheckpointKind.OLMO_UNSHARDED),
    ("olmo-core-dcp", CheckpointKind.OLMO_CORE_UNSHARDED),
]


@pytest.mark.parametrize(("name", "target"), UNSHARD_CASES)
def test_unshard_sample_matches_writer(
    tmp_path: Path, name: str, target: CheckpointKind, sample_factory: Any
) -> None:
    sample = sample_factory(name)
    before = digest_tree(sample.path)

    result = convert(sample.path, target, tmp_path / "out")

    written = torch.load(tmp_path / "out" / "model.pt", weights_only=True, mmap=True)
    assert sorted(written) == sorted(sample.tensors)
    for tensor_name, value in sample.tensors.items():
        assert torch.equal(written[tensor_name], value), tensor_name
    output = open_checkpoint(tmp_path / "out")
    assert output.kind == target
    assert output.optimizer is not None
    optimizer = {tensor.name: tensor for tensor in output.optimizer.tensors}
    for tensor_name, value in sample.optimizer_tensors.items():
        assert torch.equal(read_tensor(output, optimizer[tensor_name]), value), tensor_name
    assert (tmp_path / "out" / "train.pt").is_file()
    assert result.verify is not None
    assert result.verify.ok
    assert digest_tree(sample.path) == before


@pytest.mark.parametrize("name", ["transformers-olmo", "transformers-olmo2"])
def test_transformers_round_trip(tmp_path: Path, name: str, sample_factory: Any) -> None:
    from transformers import AutoModelForCausalLM

    sample = sample_factory(name)
    before = digest_tree(sample.path)

    convert(sample.path, CheckpointKind.OLMO_UNSHARDED, tmp_path / "olmo")
    convert(tmp_path / "olmo", CheckpointKind.TRANSFORMERS, tmp_path / "back")

    back = open_checkpoint(tmp_path / "back")
    for tensor_name, value in sample.tensors.items():
        assert torch.equal(read_tensor(back, back.tensor(tensor_name)), value), tensor_name
    tokens = torch.arange(3, 19).unsqueeze(0)
    with torch.no_grad():
        original = AutoModelForCausalLM.from_pretrained(sample.path).eval()(tokens).logits
        converted = AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()(tokens).logits
    assert torch.equal(original, converted)
    assert digest_tree(sample.path) == before


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("olmo1-sharded-torch-legacy", CheckpointKind.OLMO_UNSHARDED),
        ("transformers-olmo2", CheckpointKind.OLMO_UNSHARDED),
    ],
)
def test_verify_logits_passes(
    tmp_path: Path, name: str, target: CheckpointKind, sample_factory: Any
) -> None:
    sample = sample_factory(name)

    result = convert(sample.path, target, tmp_path / "out", verify_logits=True)

    assert result.verify is not None
    assert result.verify.logits is not None
    assert result.verify.logits["ok"] is True
    assert result.verify.logits["max_abs_difference"] == 0.0


def test_pt_safetensors_round_trip(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    original_model = torch.load(sample.path / "model.pt", weights_only=True)
    original_optim = torch.load(sample.path / "optim.pt", weights_only=True)

    convert(sample.path, CheckpointKind.OLMO_UNSHARDED, tmp_path / "st", safetensors=True)
    convert(tmp_path / "st", CheckpointKind.OLMO_UNSHARDED, tmp_path / "pt")

    assert (tmp_path / "st" / "model.safetensors").is_file()
    assert (tmp_path / "st" / "optim.safetensors").is_file()
    model = torch.load(tmp_path / "pt" / "model.pt", weights_only=True)
    assert sorted(model) == sorted(original_model)
    for name, value in original_model.items():
        assert torch.equal(model[name], value), name
    optim = torch.load(tmp_path / "pt" / "optim.pt", weights_only=True)
    names = {
        name: param_id
        for group in original_optim["param_groups"]
        for param_id, name in zip(group["params"], group["param_names"], strict=False)
    }
    state = optim["state"]
    for name, param_id in names.items():
        key = name.removeprefix("module.")
        for field, value in original_optim["state"][param_id].items():
            stored = state[key][field] if key in state else state[param_id][field]
            assert torch.equal(stored, value), (name, field)


def test_unsharded_same_kind_keeps_optimizer_ids(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")

    convert(sample.path, CheckpointKind.OLMO_UNSHARDED, tmp_path / "copy")

    original = torch.load(sample.path / "optim.pt", weights_only=True)
    copied = torch.load(tmp_path / "copy" / "optim.pt", weights_only=True)
    assert copied["param_groups"] == original["param_groups"]
    assert sorted(copied["state"]) == sorted(original["state"])
    for param_id, fields in original["state"].items():
        for field, value in fields.items():
            assert torch.equal(copied["state"][param_id][field], value)
    assert (tmp_path / "copy" / "train.pt").read_bytes() == (sample.path / "train.pt").read_bytes()


def test_dtype_cast_rounds_like_torch(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("transformers-olmo2")

    result = convert(sample.path, CheckpointKind.TRANSFORMERS, tmp_path / "bf16", dtype="bfloat16")

    written = load_file(tmp_path / "bf16" / "model.safetensors")
    for name, value in sample.tensors.items():
        assert written[name].dtype == torch.bfloat16
        assert torch.equal(written[name], value.to(torch.bfloat16)), name
    assert result.byte_copies == 0


def test_dtype_cast_sets_config_dtype(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")

    convert(sample.path, CheckpointKind.TRANSFORMERS, tmp_path / "bf16", dtype="bfloat16")

    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    written = load_file(tmp_path / "bf16" / "model.safetensors")
    assert written["model.embed_tokens.weight"].dtype == torch.bfloat16
    expected = sample.tensors["transformer.wte.weight"].to(torch.bfloat16)
    assert torch.equal(written["model.embed_tokens.weight"], expected)


def test_transformers_shards_and_index(tmp_path: Path, sample_factory: Any) -> None:
    from transformers import AutoModelForCausalLM

    sample = sample_factory("transformers-olmo2")

    convert(sample.path, CheckpointKind.TRANSFORMERS, tmp_path / "sharded", max_shard_size="20KB")

    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1
    assert files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    expected_total = sum(value.numel() * value.element_size() for value in sample.tensors.values())
    assert index["metadata"]["total_size"] == expected_total
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sharded")
    state = model.state_dict()
    for name, value in sample.tensors.items():
        assert torch.equal(state[name], value), name


def test_refuses_existing_output(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("transformers-olmo2")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    checkpoint = open_checkpoint(sample.path)

    plan = engine.plan(
        checkpoint, CheckpointKind.TRANSFORMERS, engine.ConvertOptions(output=tmp_path / "out")
    )

    assert any("already exists" in problem for problem in plan.problems)
    with pytest.raises(ConversionError, match="already exists"):
        engine.run(plan)
    assert entries(tmp_path / "out") == ["keep.txt"]


def test_force_replaces_output(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("transformers-olmo2")
    convert(sample.path, CheckpointKind.TRANSFORMERS, tmp_path / "out")
    (tmp_path / "out" / "old.txt").write_text("old")

    convert(sample.path, CheckpointKind.TRANSFORMERS, tmp_path / "out", force=True)

    assert "old.txt" not in entries(tmp_path / "out")
    assert MANIFEST_FILE in entries(tmp_path / "out")
    assert entries(tmp_path) == ["out"]


def test_refuses_output_inside_input(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("transformers-olmo2")
    checkpoint = open_checkpoint(sample.path)
    before = digest_tree(sample.path)

    with pytest.raises(ConversionError, match="inside the input"):
        engine.plan(
            checkpoint,
            CheckpointKind.TRANSFORMERS,
            engine.ConvertOptions(output=sample.path / "converted"),
        )
    assert digest_tree(sample.path) == before


def test_refuses_sharded_target(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    checkpoint = open_checkpoint(sample.path)

    with pytest.raises(ConversionError, match="unsharded"):
        engine.plan(
            checkpoint,
            CheckpointKind.OLMO_SHARDED_LOCAL,
            engine.ConvertOptions(output=tmp_path / "out"),
        )
    assert entries(tmp_path) == []


def test_unmapped_source_tensor_stops_before_writing(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    checkpoint = open_checkpoint(sample.path)
    full = identity_mapping(checkpoint)
    left_out = full.mappings[-1].target
    partial = IdentityResult(mappings=full.mappings[:-1])

    with pytest.raises(ConversionError, match=left_out):
        engine.plan(
            checkpoint,
            CheckpointKind.OLMO_UNSHARDED,
            engine.ConvertOptions(output=tmp_path / "out"),
            mapping=partial,
        )
    assert entries(tmp_path) == []


def test_disk_short_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_factory: Any
) -> None:
    sample = sample_factory("transformers-olmo2")
    checkpoint = open_checkpoint(sample.path)
    monkeypatch.setenv(engine.DISK_FREE_ENV, "1000")

    plan = engine.plan(
        checkpoint, CheckpointKind.TRANSFORMERS, engine.ConvertOptions(output=tmp_path / "out")
    )

    assert plan.disk_free == 1000
    assert plan.disk_needed > 1000
    assert any("free" in problem for problem in plan.problems)
    with pytest.raises(ConversionError, match="only 1000 are free"):
        engine.run(plan)
    assert entries(tmp_path) == []


def test_keyboard_interrupt_removes_temporary(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    checkpoint = open_checkpoint(sample.path)
    before = digest_tree(sample.path)
    plan = engine.plan(
        checkpoint, CheckpointKind.OLMO_UNSHARDED, engine.ConvertOptions(output=tmp_path / "out")
    )
    seen: list[int] = []

    def interrupt(record: Any) -> None:
        seen.append(record.tensors_done)
        if record.tensors_done == 3:
            assert engine.temporary_folder(plan.output).is_dir()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run(plan, interrupt)

    assert 3 in seen
    assert entries(tmp_path) == []
    assert digest_tree(sample.path) == before


def test_verify_detects_changed_output(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("transformers-olmo2")
    checkpoint = open_checkpoint(sample.path)
    plan = engine.plan(
        checkpoint,
        CheckpointKind.TRANSFORMERS,
        engine.ConvertOptions(output=tmp_path / "out", verify=False),
    )
    engine.run(plan)
    weights = tmp_path / "out" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0xFF
    weights.write_bytes(bytes(raw))

    report = engine.verify(plan)

    assert not report.ok
    assert any("values differ" in mismatch for mismatch in report.mismatches)


def test_device_choice() -> None:
    expected = "cuda" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "cpu"
    assert engine.resolve_device("auto") == expected
    assert engine.resolve_device("cpu") == "cpu"
    with pytest.raises(UsageError, match="tpu"):
        engine.resolve_device("tpu")
    if expected == "cpu":
        with pytest.raises(ConversionError, match="no CUDA device"):
            engine.resolve_device("cuda:0")


def test_manifest_records_provenance(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("transformers-olmo2")

    result = convert(sample.path, CheckpointKind.TRANSFORMERS, tmp_path / "out", dtype="float16")

    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    assert manifest["source"] == str(sample.path.absolute())
    assert manifest["source_kind"] == "transformers"
    assert manifest["target"] == "transformers"
    assert manifest["options"]["dtype"] == "float16"
    assert manifest["mapping"]["tensors"] == result.tensors
    assert manifest["verify"]["ok"] is True


CHILD_SCRIPT = """
import sys, time
from pathlib import Path
from olmo_inspect.convert import engine
from olmo_inspect.inspect import open_path
from olmo_inspect.model import CheckpointKind

source, output, marker = (Path(arg) for arg in sys.argv[1:4])
plan = engine.plan(open_path(source), CheckpointKind.OLMO_UNSHARDED,
                   engine.ConvertOptions(output=output))

def wait_mid_run(record):
    if record.phase == "write" and record.tensors_done == 2:
        marker.write_text("mid-run")
        time.sleep(600)

engine.run(plan, wait_mid_run)
"""


def test_killed_process_leaves_no_complete_output(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    before = digest_tree(sample.path)
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "marker"
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, str(sample.path), str(work / "out"), str(marker)],
        env=environment,
    )
    try:
        deadline = time.monotonic() + CHILD_START_TIMEOUT_S
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child never reached the middle of its run"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()

    assert child.returncode == -signal.SIGKILL
    assert not (work / "out").exists()
    leftovers = entries(work)
    assert leftovers == [f".out.tmp-{child.pid}"]
    assert not (work / leftovers[0] / MANIFEST_FILE).exists()
    assert digest_tree(sample.path) == before
