"""Transformers config files built on a background thread while the engine writes tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from convert_helpers import entries, open_checkpoint
from safetensors.torch import load_file

from olmo_inspect.convert import configs, engine
from olmo_inspect.convert.layout import DEFERRED_TEXT_BYTES, MANIFEST_FILE, FileFormat
from olmo_inspect.convert.mapping import MappingOptions, build_mapping
from olmo_inspect.errors import ConversionError
from olmo_inspect.model import CheckpointKind

CONFIG_FILES = (configs.CONFIG_JSON, configs.GENERATION_CONFIG_JSON)


def deferred_options(output: Path) -> engine.ConvertOptions:
    """Return options whose mapping builds the Transformers config in the background."""
    return engine.ConvertOptions(
        output=output, mapping_options=MappingOptions(defer_transformers_config=True)
    )


@pytest.mark.parametrize("name", ["olmo1-unsharded", "olmo-core-unsharded"])
def test_deferred_config_matches_eager(tmp_path: Path, name: str, sample_factory: Any) -> None:
    sample = sample_factory(name)
    checkpoint = open_checkpoint(sample.path)
    eager = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)

    plan = engine.plan(checkpoint, CheckpointKind.TRANSFORMERS, deferred_options(tmp_path / "hf"))
    pending = [item.path for item in plan.files if item.pending]
    planned_disk = plan.disk_needed
    result = engine.run(plan)

    assert pending == list(CONFIG_FILES)
    for file_name in CONFIG_FILES:
        assert (tmp_path / "hf" / file_name).read_text() == eager.files[file_name], file_name
    assert not any(item.pending for item in plan.files)
    assert plan.disk_needed == sum(item.nbytes for item in plan.files)
    assert planned_disk == plan.disk_needed + sum(
        DEFERRED_TEXT_BYTES - len(eager.files[file_name].encode()) for file_name in CONFIG_FILES
    )
    assert result.verify is not None
    assert result.verify.ok
    written = load_file(tmp_path / "hf" / "model.safetensors")
    assert len(written) == result.tensors


def test_deferred_config_sizes_in_manifest(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    checkpoint = open_checkpoint(sample.path)

    plan = engine.plan(checkpoint, CheckpointKind.TRANSFORMERS, deferred_options(tmp_path / "hf"))
    engine.run(plan)

    manifest = json.loads((tmp_path / "hf" / MANIFEST_FILE).read_text())
    sizes = {item["path"]: item["bytes"] for item in manifest["files"]}
    for file_name in CONFIG_FILES:
        assert sizes[file_name] == (tmp_path / "hf" / file_name).stat().st_size, file_name


def test_deferred_plan_json_waits_for_texts(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    checkpoint = open_checkpoint(sample.path)
    eager = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)

    plan = engine.plan(checkpoint, CheckpointKind.TRANSFORMERS, deferred_options(tmp_path / "hf"))
    document = plan.to_json()

    sizes = {item["path"]: item["bytes"] for item in document["files"]}
    for file_name in CONFIG_FILES:
        assert sizes[file_name] == len(eager.files[file_name].encode()), file_name
    assert document["disk_needed"] == sum(sizes.values())
    assert entries(tmp_path) == []


def test_deferred_config_error_stops_run(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    checkpoint = open_checkpoint(sample.path)
    mapping = build_mapping(
        checkpoint,
        CheckpointKind.TRANSFORMERS,
        MappingOptions(defer_transformers_config=True),
    )
    fields = {"tie_word_embeddings": True}
    mapping.deferred = configs.DeferredConfigFiles("not_a_model_type", fields)

    plan = engine.plan(
        checkpoint,
        CheckpointKind.TRANSFORMERS,
        engine.ConvertOptions(output=tmp_path / "hf"),
        mapping=mapping,
    )

    assert [item.format for item in plan.files if item.pending] == [FileFormat.TEXT] * 2
    with pytest.raises(ConversionError, match="not_a_model_type"):
        engine.run(plan)
    assert entries(tmp_path) == []


def test_deferred_config_files_result() -> None:
    fields = {"vocab_size": 64, "hidden_size": 16, "tie_word_embeddings": True}
    expected = configs.transformers_config_files(configs.build_transformers_config("olmo", fields))

    deferred = configs.DeferredConfigFiles("olmo", fields)

    assert deferred.result() == expected
    assert deferred.result() == expected
    assert json.loads(deferred.result()[configs.CONFIG_JSON])["tie_word_embeddings"] is True


def test_deferred_config_files_requires_tying() -> None:
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        configs.DeferredConfigFiles("olmo", {"vocab_size": 64})


def test_eager_plan_has_no_pending_files(tmp_path: Path, sample_factory: Any) -> None:
    sample = sample_factory("olmo1-unsharded")
    checkpoint = open_checkpoint(sample.path)
    eager = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)

    plan = engine.plan(
        checkpoint, CheckpointKind.TRANSFORMERS, engine.ConvertOptions(output=tmp_path / "hf")
    )

    texts = {item.path: item.content for item in plan.files if item.format == FileFormat.TEXT}
    assert not any(item.pending for item in plan.files)
    assert plan.disk_needed == sum(item.nbytes for item in plan.files)
    for file_name in CONFIG_FILES:
        assert texts[file_name] == eager.files[file_name], file_name


def test_byte_copy_plan_does_not_import_torch(sample_factory, tmp_path) -> None:
    import subprocess
    import sys

    sample = sample_factory("olmo1-unsharded")
    output = tmp_path / "out"
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from olmo_inspect.convert import engine\n"
        "from olmo_inspect.inspect import open_checkpoint\n"
        "from olmo_inspect.model import CheckpointKind\n"
        f"source = open_checkpoint(Path({str(sample.path)!r}))\n"
        "options = engine.ConvertOptions(output=Path("
        f"{str(output)!r}), device='auto', verify=False, model_only=True)\n"
        "plan = engine.plan(source, CheckpointKind.OLMO_UNSHARDED, options)\n"
        "print(all(step.method == 'copy' for step in plan.steps), 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]
