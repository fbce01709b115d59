"""Tests for ``olmo-inspect convert`` through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from convert_helpers import digest_tree, open_checkpoint
from safetensors.torch import load_file

from olmo_inspect.cli import main
from olmo_inspect.convert.mapping import build_mapping
from olmo_inspect.errors import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from olmo_inspect.model import CheckpointKind


def test_dry_run_json_writes_nothing(
    tmp_path: Path, sample_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_factory("olmo1-unsharded")

    code = main(
        [
            "convert",
            str(sample.path),
            "--to",
            "transformers",
            "-o",
            str(tmp_path / "hf"),
            "--dry-run",
            "--json",
        ]
    )

    plan = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    assert plan["target"] == "transformers"
    assert plan["source_kind"] == "olmo-unsharded"
    assert "model.safetensors" in [item["path"] for item in plan["files"]]
    assert plan["byte_copies"] == len(plan["tensors"])
    assert plan["problems"] == []
    assert list(tmp_path.iterdir()) == []


def test_dry_run_text_lists_tensors(
    tmp_path: Path, sample_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_factory("olmo1-unsharded")

    code = main(
        [
            "convert",
            str(sample.path),
            "--to",
            "transformers",
            "-o",
            str(tmp_path / "hf"),
            "--dry-run",
            "--dtype",
            "bfloat16",
        ]
    )

    text = capsys.readouterr().out
    assert code == EXIT_OK
    assert "model.layers.0.self_attn.q_proj.weight" in text
    assert "cast float32 to bfloat16" in text


def test_convert_json_result(
    tmp_path: Path, sample_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_factory("transformers-olmo2")
    before = digest_tree(sample.path)

    code = main(
        [
            "convert",
            str(sample.path),
            "--to",
            "olmo-unsharded",
            "-o",
            str(tmp_path / "olmo"),
            "--json",
            "--model-only",
        ]
    )

    result = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    assert result["verify"]["ok"] is True
    assert result["verify"]["checked"] == result["tensors"]
    written = torch.load(tmp_path / "olmo" / "model.pt", weights_only=True)
    assert len(written) == result["tensors"]
    assert not (tmp_path / "olmo" / "optim.pt").exists()
    assert digest_tree(sample.path) == before


def test_convert_text_result(
    tmp_path: Path, sample_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_factory("transformers-olmo2")

    code = main(
        [
            "convert",
            str(sample.path),
            "--to",
            "transformers",
            "-o",
            str(tmp_path / "out"),
            "--no-verify",
            "--safetensors",
        ]
    )

    output = capsys.readouterr().out
    assert code == EXIT_OK
    assert "wrote" in output
    assert "skipped" in output
    written = load_file(tmp_path / "out" / "model.safetensors")
    for name, value in sample.tensors.items():
        assert torch.equal(written[name], value), name


def test_existing_output_exit_code(
    tmp_path: Path, sample_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_factory("transformers-olmo2")
    (tmp_path / "out").mkdir()

    code = main(["convert", str(sample.path), "--to", "transformers", "-o", str(tmp_path / "out")])

    captured = capsys.readouterr()
    assert code == EXIT_INVALID
    assert "already exists" in captured.err
    assert "Traceback" not in captured.err
    assert list((tmp_path / "out").iterdir()) == []


def test_invalid_shard_size_is_usage_error(
    tmp_path: Path, sample_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_factory("transformers-olmo2")

    code = main(
        [
            "convert",
            str(sample.path),
            "--to",
            "transformers",
            "-o",
            str(tmp_path / "out"),
            "--max-shard-size",
            "lots",
        ]
    )

    assert code == EXIT_USAGE
    assert "max shard size" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_run_summary_lists_pending_config(
    tmp_path: Path, sample_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_factory("olmo1-unsharded")
    eager = build_mapping(open_checkpoint(sample.path), CheckpointKind.TRANSFORMERS)

    code = main(["convert", str(sample.path), "--to", "transformers", "-o", str(tmp_path / "hf")])

    summary = capsys.readouterr().err.splitlines()
    config_lines = [line.split() for line in summary if "config.json" in line]
    assert code == EXIT_OK
    assert [fields[:2] for fields in config_lines] == [
        ["config.json", "pending"],
        ["generation_config.json", "pending"],
    ]
    assert any(line.startswith("disk     about ") for line in summary)
    for name in ("config.json", "generation_config.json"):
        assert (tmp_path / "hf" / name).read_text() == eager.files[name], name


def test_dry_run_text_sizes_config(
    tmp_path: Path, sample_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_factory("olmo1-unsharded")

    code = main(
        [
            "convert",
            str(sample.path),
            "--to",
            "transformers",
            "-o",
            str(tmp_path / "hf"),
            "--dry-run",
        ]
    )

    output = capsys.readouterr().out
    assert code == EXIT_OK
    assert "pending" not in output
    assert "disk     about" not in output
    assert [line.split()[0] for line in output.splitlines() if "config.json" in line] == [
        "config.json",
        "generation_config.json",
    ]


def test_force_never_deletes_a_folder_holding_the_input(
    sample_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = tmp_path / "run"
    source = parent / "step3"
    parent.mkdir()
    for path in sample_factory("olmo1-unsharded").path.iterdir():
        source.mkdir(exist_ok=True)
        (source / path.name).write_bytes(path.read_bytes())
    before = digest_tree(source)

    code = main(["convert", str(source), "--to", "transformers", "-o", str(parent), "--force"])

    assert code == EXIT_INVALID
    assert "contains the input checkpoint" in capsys.readouterr().err
    assert digest_tree(source) == before


def test_force_never_deletes_an_unrelated_folder(
    sample_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_factory("olmo1-unsharded")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")

    code = main(["convert", str(sample.path), "--to", "transformers", "-o", str(notes), "--force"])

    assert code == EXIT_INVALID
    assert "will not delete it" in capsys.readouterr().err
    assert (notes / "todo.txt").read_text() == "keep me"


def test_force_replaces_an_earlier_output(sample_factory: Any, tmp_path: Path) -> None:
    sample = sample_factory("olmo1-unsharded")
    output = tmp_path / "hf"
    arguments = ["convert", str(sample.path), "--to", "transformers", "-o", str(output)]

    assert main(arguments) == EXIT_OK
    assert main([*arguments, "--force"]) == EXIT_OK
    assert (output / "model.safetensors").is_file()


def test_unshard_train_state_has_no_rng_placeholder(sample_factory: Any, tmp_path: Path) -> None:
    sample = sample_factory("olmo1-sharded-torch-legacy")
    output = tmp_path / "unsharded"

    assert main(["convert", str(sample.path), "--to", "olmo-unsharded", "-o", str(output)]) == 0

    state = torch.load(output / "train.pt", weights_only=True)
    assert "rng" not in state
    assert state["global_step"] == sample.train_state["global_step"]


def test_dry_run_notes_options_without_effect(
    sample_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_factory("olmo1-unsharded")
    arguments = ["convert", str(sample.path), "--dry-run", "--json"]

    assert (
        main(
            [
                *arguments,
                "--to",
                "olmo-unsharded",
                "-o",
                str(tmp_path / "a"),
                "--max-shard-size",
                "100KB",
            ]
        )
        == EXIT_OK
    )
    unsharded_notes = json.loads(capsys.readouterr().out)["notes"]
    assert (
        main(
            [
                *arguments,
                "--to",
                "transformers",
                "-o",
                str(tmp_path / "b"),
                "--safetensors",
                "--model-only",
            ]
        )
        == EXIT_OK
    )
    transformers_notes = json.loads(capsys.readouterr().out)["notes"]

    assert any(note.startswith("--max-shard-size has no effect") for note in unsharded_notes)
    assert any(note.startswith("--safetensors has no effect") for note in transformers_notes)
    assert any(note.startswith("--model-only has no effect") for note in transformers_notes)
    assert not (tmp_path / "a").exists()
