"""Mappings from OLMo-core checkpoints to Transformers olmo2, olmo3 and flex_olmo."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from mapping_helpers import (
    NUM_EXPERTS,
    apply_result,
    checkpoint_from_tensors,
    fixtures_dir,
    flex_olmo_model,
    mapping_shapes,
    meta_model_shapes,
    moe_config,
    olmo_core_moe_tensors,
    saved_model_shapes,
)

from olmo_inspect.convert.mapping import build_mapping, valid_targets
from olmo_inspect.convert.olmo_names import to_canonical
from olmo_inspect.errors import ConversionError
from olmo_inspect.model import CheckpointKind

FIXTURES = fixtures_dir()
CORE3 = FIXTURES / "olmo-core3-train"
needs_fixtures = pytest.mark.skipif(
    not CORE3.is_dir(), reason=f"upstream reference checkpoints not found at {FIXTURES}"
)


def core3_checkpoint(config: dict[str, Any] | None = None) -> Any:
    """Describe the upstream OLMo-core 3 fixture from its ground truth (metadata only)."""
    truth = json.loads((CORE3 / "ground_truth.json").read_text())
    path = (CORE3 / truth["checkpoint_path"]).resolve()
    if config is None:
        config = json.loads((path / "config.json").read_text())
    tensors = {
        name.removeprefix("model."): torch.empty(entry["shape"], device="meta")
        for name, entry in truth["tensors"].items()
    }
    return checkpoint_from_tensors(path, CheckpointKind.OLMO_CORE, tensors, config)


def core3_config() -> dict[str, Any]:
    """Return the fixture's experiment config, to modify."""
    truth = json.loads((CORE3 / "ground_truth.json").read_text())
    path = (CORE3 / truth["checkpoint_path"]).resolve()
    return json.loads((path / "config.json").read_text())


@needs_fixtures
def test_core3_fixture_targets_match_meta_model() -> None:
    checkpoint = core3_checkpoint()

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)
    config = json.loads(result.files["config.json"])
    generation = json.loads(result.files["generation_config.json"])
    tokenizer = checkpoint.config["dataset"]["tokenizer"]

    assert result.target_model_type == "olmo2"
    assert mapping_shapes(result) == meta_model_shapes(result.files["config.json"])
    assert config["eos_token_id"] == tokenizer["eos_token_id"]
    assert config["pad_token_id"] == tokenizer["pad_token_id"]
    assert generation["eos_token_id"] == tokenizer["eos_token_id"]
    assert (
        config["max_position_embeddings"]
        == checkpoint.config["train_module"]["max_sequence_length"]
    )
    assert config["rms_norm_eps"] == checkpoint.config["model"]["block"]["layer_norm"]["eps"]
    assert all(mapping.transform is None for mapping in result.mappings)


@needs_fixtures
def test_core3_lm_head_norm_becomes_model_norm() -> None:
    checkpoint = core3_checkpoint()

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)
    sources = {mapping.target: mapping.sources[0].name for mapping in result.mappings}

    assert sources["model.norm.weight"] == "lm_head.norm.weight"
    assert sources["lm_head.weight"] == "lm_head.w_out.weight"
    assert sources["model.layers.1.mlp.gate_proj.weight"] == "blocks.1.feed_forward.w1.weight"
    assert sources["model.layers.1.mlp.up_proj.weight"] == "blocks.1.feed_forward.w3.weight"
    assert (
        sources["model.layers.0.post_attention_layernorm.weight"]
        == "blocks.0.attention_norm.weight"
    )


@needs_fixtures
def test_sliding_window_gives_olmo3() -> None:
    config = core3_config()
    config["model"]["n_layers"] = 2
    config["model"]["block"]["sequence_mixer"]["sliding_window"] = {
        "pattern": [7, -1],
        "force_full_attention_on_first_layer": False,
        "force_full_attention_on_last_layer": False,
    }
    checkpoint = core3_checkpoint(config)

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)
    written = json.loads(result.files["config.json"])

    assert result.target_model_type == "olmo3"
    assert written["sliding_window"] == 7 + 1
    assert written["layer_types"] == ["sliding_attention", "full_attention"]
    assert mapping_shapes(result) == meta_model_shapes(result.files["config.json"])


@needs_fixtures
def test_sliding_window_forced_full_layers() -> None:
    config = core3_config()
    config["model"]["block"]["sequence_mixer"]["sliding_window"] = {"pattern": [5]}
    checkpoint = core3_checkpoint(config)

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)

    # OLMo-core forces full attention on the first and last layer by default, so with two layers
    # no layer slides and the model stays olmo2.
    assert result.target_model_type == "olmo2"


@needs_fixtures
@pytest.mark.parametrize(
    ("path", "value", "setting"),
    [
        (("block", "sequence_mixer", "use_head_qk_norm"), True, "use_head_qk_norm"),
        (("block", "sequence_mixer", "rope", "name"), "complex", "complex"),
        (("block", "name"), "default", "block.name"),
        (("block", "sequence_mixer", "qk_norm"), None, "qk_norm"),
        (("block", "feed_forward", "bias"), True, "feed_forward.bias"),
    ],
)
def test_olmo_core_rejection_names_setting(path: tuple[str, ...], value: Any, setting: str) -> None:
    config = core3_config()
    section = config["model"]
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    checkpoint = core3_checkpoint(config)

    with pytest.raises(ConversionError, match=setting):
        build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)
    assert setting in (valid_targets(checkpoint)[CheckpointKind.TRANSFORMERS] or "")


@needs_fixtures
def test_olmo_core_unshard_is_identity() -> None:
    checkpoint = core3_checkpoint()

    result = build_mapping(checkpoint, CheckpointKind.OLMO_CORE_UNSHARDED)

    assert mapping_shapes(result) == {t.name: t.shape for t in checkpoint.tensors}
    assert json.loads(result.files["config.json"]) == checkpoint.config
    assert valid_targets(checkpoint)[CheckpointKind.OLMO_UNSHARDED] is not None


@pytest.mark.parametrize(
    ("dropless", "three_dimensional"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_moe_to_flex_olmo_values(tmp_path: Path, dropless: bool, three_dimensional: bool) -> None:
    hf_tensors, _ = flex_olmo_model(tmp_path / "hf")
    core_tensors = olmo_core_moe_tensors(hf_tensors, dropless, three_dimensional)
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_CORE_UNSHARDED, core_tensors, moe_config(dropless)
    )

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)
    converted = apply_result(result, core_tensors)

    assert result.target_model_type == "flex_olmo"
    assert set(converted) == set(hf_tensors)
    for name, tensor in hf_tensors.items():
        assert torch.equal(converted[name], tensor), name


def test_moe_targets_match_saved_model(tmp_path: Path) -> None:
    hf_tensors, _ = flex_olmo_model(tmp_path / "hf")
    core_tensors = olmo_core_moe_tensors(hf_tensors, dropless=False, three_dimensional=False)
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_CORE_UNSHARDED, core_tensors, moe_config(False)
    )

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)
    written = json.loads(result.files["config.json"])

    assert written["num_experts"] == NUM_EXPERTS
    assert written["num_experts_per_tok"] == 2
    assert mapping_shapes(result) == saved_model_shapes(
        result.files["config.json"], tmp_path / "saved"
    )


def test_moe_shared_mlp_rejected(tmp_path: Path) -> None:
    config = moe_config(False)
    config["model"]["block"]["feed_forward_moe"]["shared_mlp"] = {"hidden_size": 16}
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_CORE_UNSHARDED, {}, copy.deepcopy(config)
    )

    with pytest.raises(ConversionError, match="shared_mlp"):
        build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)


def test_canonical_names_of_olmo_core_experts() -> None:
    config = moe_config(dropless=False)

    parts = to_canonical(
        "blocks.1.feed_forward_moe.experts.mlp.w1", CheckpointKind.OLMO_CORE_UNSHARDED, config
    )
    renamed = to_canonical("blocks.0.attention.w_q.weight", CheckpointKind.OLMO_CORE, config)

    d_model = config["model"]["d_model"]
    assert [(part.name, part.rows, part.transposed) for part in parts] == [
        (f"model.layers.1.mlp.experts.{e}.gate_proj.weight", (e * d_model, (e + 1) * d_model), True)
        for e in range(NUM_EXPERTS)
    ]
    assert [part.name for part in renamed] == ["model.layers.0.self_attn.q_proj.weight"]
