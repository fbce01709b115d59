"""The olmo-inspect command line: --json output, exit codes, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from olmo_inspect.cli import main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "olmo_inspect.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_json_output_schema(sample_factory) -> None:
    sample = sample_factory("olmo1-unsharded")
    result = run_cli(str(sample.path), "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["kind"] == "olmo-unsharded"
    assert document["complete"] is True
    assert document["problems"] == []
    assert document["path"] == str(sample.path)
    assert document["summary"]["parameters"] == sum(t.numel() for t in sample.tensors.values())
    assert document["summary"]["bytes"] == sum(
        t.numel() * t.element_size() for t in sample.tensors.values()
    )
    assert document["train_state"]["step"] == sample.train_state["global_step"]
    by_name = {entry["name"]: entry for entry in document["tensors"]}
    assert set(by_name) == set(sample.tensors)
    for name, tensor in sample.tensors.items():
        entry = by_name[name]
        assert entry["shape"] == list(tensor.shape)
        assert entry["dtype"] == str(tensor.dtype).removeprefix("torch.")
        assert entry["bytes"] == tensor.numel() * tensor.element_size()
        assert entry["file"] == "model.pt"
        assert entry["stored_key"] is None
    assert document["optimizer"]["bytes"] == sum(
        t.numel() * t.element_size() for t in sample.optimizer_tensors.values()
    )
    assert len(document["optimizer_tensors"]) == len(sample.optimizer_tensors)


def test_json_imports_neither_torch_nor_textual(sample_factory) -> None:
    sample = sample_factory("transformers-olmo2")
    code = (
        "import sys, io, contextlib\n"
        "from olmo_inspect.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main([{str(sample.path)!r}, '--json'])\n"
        "loaded = [name in sys.modules for name in ('torch', 'textual', 'transformers')]\n"
        "print(code, *loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["0", "False", "False", "False"], result.stderr


def test_missing_path_is_one_line_error(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "nope"), "--json")

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no such file or directory" in lines[0]
    assert "Traceback" not in result.stderr


def test_empty_directory_says_what_to_do(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path), "--json")
    assert result.returncode == 1
    assert "empty" in result.stderr
    assert "config.yaml" in result.stderr


def test_unrelated_directory_names_what_was_found(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    result = run_cli(str(tmp_path), "--json")
    assert result.returncode == 1
    assert "notes.txt" in result.stderr
    assert "expected" in result.stderr


def test_config_json_without_model_type_is_not_transformers(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    result = run_cli(str(tmp_path), "--json")
    assert result.returncode == 1
    assert "no model_type" in result.stderr


def test_non_olmo_model_type_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    result = run_cli(str(tmp_path), "--json")
    assert result.returncode == 1
    assert "'llama' is not of the OLMo family" in result.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "nope"), "--json", "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_usage_error_exits_2() -> None:
    result = run_cli("--json")
    assert result.returncode == 2


def test_truncated_weights_print_partial_json(sample_factory, tmp_path: Path) -> None:
    sample = sample_factory("transformers-olmo2")
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for path in sample.path.iterdir():
        data = path.read_bytes()
        if path.name == "model.safetensors":
            data = data[: len(data) - 100]
        (copy / path.name).write_bytes(data)

    result = run_cli(str(copy), "--json")

    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["kind"] == "transformers"
    assert document["config"]["model_type"] == sample.config["model_type"]
    problems = [p for p in document["problems"] if "model.safetensors" in p]
    assert problems and "truncated" in problems[0]


def test_hostile_model_pt_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.yaml").write_text("model:\n  d_model: 4\n")

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save(
        {"transformer.wte.weight": torch.ones(8, 4), "evil": Payload()}, checkpoint / "model.pt"
    )

    result = run_cli(str(checkpoint), "--json")

    assert not marker.exists()
    document = json.loads(result.stdout)
    assert result.returncode == 0
    assert any("system" in note for note in document["notes"])
    assert [t["name"] for t in document["tensors"]] == ["transformer.wte.weight"]


def test_inspect_writes_nothing_into_the_input(sample_factory) -> None:
    sample = sample_factory("olmo2-unsharded-safetensors")
    before = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sample.path.rglob("*")
    )
    assert main([str(sample.path), "--json"]) == 0
    after = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sample.path.rglob("*"))
    assert before == after


def test_plain_text_report_when_not_a_terminal(sample_factory) -> None:
    sample = sample_factory("hf-olmo")
    result = run_cli(str(sample.path))
    assert result.returncode == 0
    assert "hf-olmo, complete" in result.stdout


@pytest.mark.parametrize("name", ["olmo1-unsharded"])
def test_run_folder_json(sample_factory, tmp_path: Path, name: str) -> None:
    sample = sample_factory(name)
    run = tmp_path / "run"
    run.mkdir()
    (run / "step5").symlink_to(sample.path, target_is_directory=True)
    step7 = run / "step7"
    step7.mkdir()
    (step7 / "config.yaml").write_text("model: {}\n")
    (run / "latest").symlink_to("step7")

    result = run_cli(str(run), "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["kind"] == "run"
    steps = [
        (entry["step"], entry["complete"], entry["latest"]) for entry in document["checkpoints"]
    ]
    assert steps == [(7, False, True), (5, True, False)]


def test_rank_file_alone_points_to_its_folder(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "olmo1-sharded-torch-legacy" / "step3"
    result = run_cli(str(folder / "rank0.pt"), "--json")

    assert result.returncode == 2
    assert "one rank's file" in result.stderr
    assert str(folder) in result.stderr


def test_truncated_model_still_prints_what_was_read(sample_factory, tmp_path: Path) -> None:
    sample = sample_factory("olmo1-unsharded")
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for path in sample.path.iterdir():
        data = path.read_bytes()
        (copy / path.name).write_bytes(data[: len(data) // 2] if path.name == "model.pt" else data)

    result = run_cli(str(copy), "--json")

    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["complete"] is False
    assert any("model.pt" in problem and "truncated" in problem for problem in document["problems"])
    assert document["train_state"]["step"] == sample.train_state["global_step"]


def test_relative_path_is_reported_absolute(sample_factory) -> None:
    sample = sample_factory("hf-olmo")
    result = run_cli(".", "--json", cwd=sample.path)
    assert json.loads(result.stdout)["path"] == str(sample.path)


def test_run_folder_lists_problems_and_dangling_links(sample_factory, tmp_path: Path) -> None:
    sample = sample_factory("olmo1-unsharded")
    run = tmp_path / "run"
    broken = run / "step2"
    broken.mkdir(parents=True)
    for path in sample.path.iterdir():
        if path.name != "model.pt":
            (broken / path.name).write_bytes(path.read_bytes())
    (run / "latest").symlink_to("step9")

    document = json.loads(run_cli(str(run), "--json").stdout)

    assert document["checkpoints"][0]["complete"] is False
    assert document["checkpoints"][0]["problems"]
    assert document["notes"] == ["latest points to a missing step9"]
