"""Mappings between the OLMo trainer, hf_olmo and Transformers olmo/olmo2 layouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from mapping_helpers import (
    apply_result,
    checkpoint_from_tensors,
    fixtures_dir,
    mapping_shapes,
    meta_model_shapes,
    read_safetensors,
    read_transformers_dir,
)

from olmo_inspect.convert.mapping import MappingOptions, build_mapping, valid_targets
from olmo_inspect.convert.olmo_names import to_canonical
from olmo_inspect.errors import ConversionError
from olmo_inspect.model import CheckpointKind

FIXTURES = fixtures_dir()
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"upstream reference checkpoints not found at {FIXTURES}"
)

OLMO1_DIR = FIXTURES / "olmo1-unsharded-ddp" / "step3-unsharded"
HF_CONVERTED_DIR = FIXTURES / "hf-olmo-converted"
HF_PACKAGE_DIR = FIXTURES / "hf-olmo-package"
OLMO2_LOCAL = FIXTURES / "olmo2-sharded-local"


def olmo1_checkpoint() -> tuple[Any, dict[str, torch.Tensor]]:
    """Load the upstream OLMo 1 fixture (a trusted reference file) and describe it."""
    state = torch.load(OLMO1_DIR / "model.pt", map_location="cpu", weights_only=True)
    config = yaml.safe_load((OLMO1_DIR / "config.yaml").read_text())
    return checkpoint_from_tensors(OLMO1_DIR, CheckpointKind.OLMO_UNSHARDED, state, config), state


def olmo2_local_checkpoint() -> Any:
    """Describe the upstream OLMo 2 sharded fixture from its ground truth (metadata only)."""
    truth = json.loads((OLMO2_LOCAL / "ground_truth.json").read_text())
    path = (OLMO2_LOCAL / truth["checkpoint_path"]).resolve()
    config = yaml.safe_load((path / "config.yaml").read_text())
    tensors = {
        name: torch.empty(entry["shape"], dtype=getattr(torch, entry["dtype"]), device="meta")
        for name, entry in truth["tensors"].items()
    }
    return checkpoint_from_tensors(path, CheckpointKind.OLMO_SHARDED_LOCAL, tensors, config)


def olmo_trainer_config(**model_overrides: Any) -> dict[str, Any]:
    """Return a small OLMo 2 style config.yaml document with overrides in its model section."""
    model = {
        "d_model": 16,
        "n_heads": 4,
        "n_kv_heads": 2,
        "n_layers": 1,
        "mlp_hidden_size": 64,
        "activation_type": "swiglu",
        "block_type": "sequential",
        "rope": True,
        "rope_theta": 500000,
        "alibi": False,
        "attention_layer_norm": True,
        "norm_after": True,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "layer_norm_eps": 1e-6,
        "include_bias": False,
        "max_sequence_length": 32,
        "vocab_size": 100,
        "embedding_size": 128,
        "weight_tying": False,
        "eos_token_id": 99,
        "pad_token_id": 98,
    }
    model.update(model_overrides)
    return {"model": model, "tokenizer": {"identifier": "missing-tokenizer.json"}}


def olmo2_trainer_tensors(layers: int = 1) -> dict[str, torch.Tensor]:
    """Return OLMo 2 style trainer tensors matching ``olmo_trainer_config()``."""
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "transformer.wte.weight": torch.randn(128, 16, generator=generator),
        "transformer.ln_f.weight": torch.randn(16, generator=generator),
        "transformer.ff_out.weight": torch.randn(128, 16, generator=generator),
    }
    for layer in range(layers):
        prefix = f"transformer.blocks.{layer}."
        tensors[prefix + "att_proj.weight"] = torch.randn(16 + 8 + 8, 16, generator=generator)
        tensors[prefix + "attn_out.weight"] = torch.randn(16, 16, generator=generator)
        tensors[prefix + "ff_proj.weight"] = torch.randn(64, 16, generator=generator)
        tensors[prefix + "ff_out.weight"] = torch.randn(16, 32, generator=generator)
        tensors[prefix + "q_norm.weight"] = torch.randn(16, generator=generator)
        tensors[prefix + "k_norm.weight"] = torch.randn(8, generator=generator)
        tensors[prefix + "attn_norm.weight"] = torch.randn(16, generator=generator)
        tensors[prefix + "ff_norm.weight"] = torch.randn(16, generator=generator)
    return tensors


def tiny_transformers_model(model_type: str, directory: Path, tied: bool) -> Path:
    """Save a tiny real Transformers model of ``model_type`` and return its directory."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        vocab_size=128,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        pad_token_id=1,
        eos_token_id=2,
        rope_theta=123456.0,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    return directory


@needs_fixtures
def test_olmo1_fixture_matches_upstream_conversion() -> None:
    checkpoint, state = olmo1_checkpoint()

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS, MappingOptions())
    converted = apply_result(result, state)
    reference = read_safetensors(HF_CONVERTED_DIR / "model.safetensors")

    assert result.target_model_type == "olmo"
    assert set(converted) == set(reference)
    for name, tensor in reference.items():
        assert torch.equal(converted[name], tensor), name


@needs_fixtures
def test_olmo1_fixture_config_matches_upstream() -> None:
    checkpoint, _ = olmo1_checkpoint()

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS, MappingOptions())
    written = json.loads(result.files["config.json"])
    reference = json.loads((HF_CONVERTED_DIR / "config.json").read_text())
    generation = json.loads(result.files["generation_config.json"])

    for key in (
        "architectures",
        "model_type",
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "tie_word_embeddings",
        "eos_token_id",
        "pad_token_id",
        "clip_qkv",
        "dtype",
    ):
        assert written[key] == reference[key], key
    assert written["rope_parameters"]["rope_theta"] == reference["rope_theta"]
    assert generation["eos_token_id"] == reference["eos_token_id"]
    assert any("50279" in note for note in result.notes)


@needs_fixtures
def test_olmo1_eos_fix_can_be_turned_off() -> None:
    checkpoint, _ = olmo1_checkpoint()
    config_eos = checkpoint.config["model"]["eos_token_id"]

    result = build_mapping(
        checkpoint, CheckpointKind.TRANSFORMERS, MappingOptions(fix_eos_token_id=False)
    )

    assert json.loads(result.files["config.json"])["eos_token_id"] == config_eos
    assert not any("50279" in note for note in result.notes)


@needs_fixtures
def test_olmo1_targets_match_meta_model() -> None:
    checkpoint, _ = olmo1_checkpoint()

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS, MappingOptions())

    assert "lm_head.weight" not in mapping_shapes(result)
    assert mapping_shapes(result) == meta_model_shapes(result.files["config.json"])


@needs_fixtures
def test_olmo2_sharded_targets_match_meta_model() -> None:
    checkpoint = olmo2_local_checkpoint()

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS, MappingOptions())

    assert result.target_model_type == "olmo2"
    assert mapping_shapes(result) == meta_model_shapes(result.files["config.json"])
    config = json.loads(result.files["config.json"])
    assert config["tie_word_embeddings"] is False
    assert config["rms_norm_eps"] == checkpoint.config["model"]["layer_norm_eps"]


def test_olmo2_feed_forward_split_order(tmp_path: Path) -> None:
    tensors = olmo2_trainer_tensors()
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_UNSHARDED, tensors, olmo_trainer_config()
    )

    converted = apply_result(build_mapping(checkpoint, CheckpointKind.TRANSFORMERS), tensors)
    fused = tensors["transformer.blocks.0.ff_proj.weight"]
    attention = tensors["transformer.blocks.0.att_proj.weight"]

    assert torch.equal(converted["model.layers.0.mlp.up_proj.weight"], fused[:32])
    assert torch.equal(converted["model.layers.0.mlp.gate_proj.weight"], fused[32:])
    assert torch.equal(converted["model.layers.0.self_attn.q_proj.weight"], attention[:16])
    assert torch.equal(converted["model.layers.0.self_attn.k_proj.weight"], attention[16:24])
    assert torch.equal(converted["model.layers.0.self_attn.v_proj.weight"], attention[24:])
    assert torch.equal(
        converted["model.layers.0.post_attention_layernorm.weight"],
        tensors["transformer.blocks.0.attn_norm.weight"],
    )


@pytest.mark.parametrize(
    ("model_type", "tied"), [("olmo", True), ("olmo", False), ("olmo2", False), ("olmo2", True)]
)
def test_transformers_round_trip_is_identity(tmp_path: Path, model_type: str, tied: bool) -> None:
    hf_dir = tiny_transformers_model(model_type, tmp_path / "hf", tied)
    hf_tensors, hf_config = read_transformers_dir(hf_dir)
    hf_checkpoint = checkpoint_from_tensors(
        hf_dir, CheckpointKind.TRANSFORMERS, hf_tensors, hf_config
    )

    to_olmo = build_mapping(hf_checkpoint, CheckpointKind.OLMO_UNSHARDED)
    olmo_tensors = apply_result(to_olmo, hf_tensors)
    olmo_config = yaml.safe_load(to_olmo.files["config.yaml"])
    olmo_checkpoint = checkpoint_from_tensors(
        tmp_path / "olmo", CheckpointKind.OLMO_UNSHARDED, olmo_tensors, olmo_config
    )
    back = build_mapping(olmo_checkpoint, CheckpointKind.TRANSFORMERS)
    round_trip = apply_result(back, olmo_tensors)

    assert back.target_model_type == model_type
    assert set(round_trip) == set(hf_tensors)
    for name, tensor in hf_tensors.items():
        assert torch.equal(round_trip[name], tensor), name

    written = json.loads(back.files["config.json"])
    for key in ("vocab_size", "intermediate_size", "num_key_value_heads", "tie_word_embeddings"):
        assert written[key] == hf_config[key], key
    assert written["rope_parameters"]["rope_theta"] == hf_config["rope_parameters"]["rope_theta"]


def test_transformers_to_olmo_config_yaml_fields(tmp_path: Path) -> None:
    hf_dir = tiny_transformers_model("olmo2", tmp_path / "hf", tied=False)
    hf_tensors, hf_config = read_transformers_dir(hf_dir)
    checkpoint = checkpoint_from_tensors(hf_dir, CheckpointKind.TRANSFORMERS, hf_tensors, hf_config)

    result = build_mapping(checkpoint, CheckpointKind.OLMO_UNSHARDED)
    document = yaml.safe_load(result.files["config.yaml"])
    model = document["model"]

    assert model["d_model"] == hf_config["hidden_size"]
    assert model["n_kv_heads"] == hf_config["num_key_value_heads"]
    assert model["mlp_hidden_size"] == 2 * hf_config["intermediate_size"]
    assert model["embedding_size"] == hf_config["vocab_size"]
    assert model["layer_norm_type"] == "rms"
    assert model["attention_layer_norm"] is True
    assert model["norm_after"] is True
    assert model["weight_tying"] is False
    assert {"optimizer", "scheduler", "data", "tokenizer"} <= set(document)
    assert any("vocab_size" in note for note in result.notes)


@needs_fixtures
def test_hf_olmo_package_matches_upstream_conversion() -> None:
    state = torch.load(HF_PACKAGE_DIR / "pytorch_model.bin", map_location="cpu", weights_only=True)
    config = json.loads((HF_PACKAGE_DIR / "config.json").read_text())
    checkpoint = checkpoint_from_tensors(HF_PACKAGE_DIR, CheckpointKind.HF_OLMO, state, config)

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)
    converted = apply_result(result, state)
    reference = read_safetensors(HF_CONVERTED_DIR / "model.safetensors")

    assert set(converted) == set(reference)
    for name, tensor in reference.items():
        assert torch.equal(converted[name], tensor), name
    assert "tokenizer.json" in result.copy_files


@needs_fixtures
def test_olmo_to_hf_olmo_matches_upstream_package() -> None:
    checkpoint, state = olmo1_checkpoint()

    result = build_mapping(checkpoint, CheckpointKind.HF_OLMO)
    converted = apply_result(result, state)
    reference = torch.load(
        HF_PACKAGE_DIR / "pytorch_model.bin", map_location="cpu", weights_only=True
    )
    written = json.loads(result.files["config.json"])
    reference_config = json.loads((HF_PACKAGE_DIR / "config.json").read_text())

    assert set(converted) == set(reference)
    for name, tensor in reference.items():
        assert torch.equal(converted[name], tensor), name
    reference_config.pop("transformers_version")
    written.pop("transformers_version")
    assert written == reference_config


@needs_fixtures
def test_hf_olmo_to_olmo_strips_prefix() -> None:
    state = torch.load(HF_PACKAGE_DIR / "pytorch_model.bin", map_location="cpu", weights_only=True)
    config = json.loads((HF_PACKAGE_DIR / "config.json").read_text())
    checkpoint = checkpoint_from_tensors(HF_PACKAGE_DIR, CheckpointKind.HF_OLMO, state, config)
    _, olmo_state = olmo1_checkpoint()

    result = build_mapping(checkpoint, CheckpointKind.OLMO_UNSHARDED)
    converted = apply_result(result, state)
    model = yaml.safe_load(result.files["config.yaml"])["model"]

    assert set(converted) == set(olmo_state)
    for name, tensor in olmo_state.items():
        assert torch.equal(converted[name], tensor), name
    for key in ("d_model", "n_layers", "vocab_size", "embedding_size", "weight_tying"):
        assert model[key] == config[key], key


@needs_fixtures
def test_tokenizer_option_writes_tokenizer_config() -> None:
    checkpoint, _ = olmo1_checkpoint()
    tokenizer_json = HF_CONVERTED_DIR / "tokenizer.json"
    tokens = {
        token["id"]: token["content"]
        for token in json.loads(tokenizer_json.read_text())["added_tokens"]
    }

    result = build_mapping(
        checkpoint, CheckpointKind.TRANSFORMERS, MappingOptions(tokenizer_dir=tokenizer_json)
    )
    tokenizer_config = json.loads(result.files["tokenizer_config.json"])
    eos = json.loads(result.files["config.json"])["eos_token_id"]
    pad = checkpoint.config["model"]["pad_token_id"]

    assert result.copy_files["tokenizer.json"] == tokenizer_json
    assert tokenizer_config["eos_token"] == tokens[eos]
    assert tokenizer_config["pad_token"] == tokens[pad]


def test_missing_tokenizer_gives_note(tmp_path: Path) -> None:
    tensors = olmo2_trainer_tensors()
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_UNSHARDED, tensors, olmo_trainer_config()
    )

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)

    assert result.copy_files == {}
    assert any("missing-tokenizer.json" in note for note in result.notes)


def test_local_tokenizer_relative_to_checkpoint(tmp_path: Path) -> None:
    tokenizer = {"added_tokens": [{"id": 99, "content": "<eos>"}, {"id": 98, "content": "<pad>"}]}
    (tmp_path / "tok.json").write_text(json.dumps(tokenizer))
    config = olmo_trainer_config()
    config["tokenizer"]["identifier"] = "tok.json"
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_UNSHARDED, olmo2_trainer_tensors(), config
    )

    result = build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)

    assert result.copy_files["tokenizer.json"] == tmp_path / "tok.json"
    assert json.loads(result.files["special_tokens_map.json"]) == {
        "eos_token": "<eos>",
        "pad_token": "<pad>",
    }


@pytest.mark.parametrize(
    ("override", "setting"),
    [
        ({"block_type": "llama"}, "block_type"),
        ({"include_bias": True}, "include_bias"),
        ({"rope": False, "alibi": True}, "rope"),
        ({"activation_type": "gelu"}, "activation_type"),
        ({"attention_layer_norm": False, "norm_after": False}, "layer_norm_with_affine"),
        ({"norm_after": False}, "norm_after"),
        ({"clip_qkv": 8.0}, "clip_qkv"),
        ({"layer_norm_type": "default"}, "layer_norm_type"),
    ],
)
def test_olmo_config_rejection_names_setting(
    tmp_path: Path, override: dict[str, Any], setting: str
) -> None:
    checkpoint = checkpoint_from_tensors(
        tmp_path,
        CheckpointKind.OLMO_UNSHARDED,
        olmo2_trainer_tensors(),
        olmo_trainer_config(**override),
    )

    with pytest.raises(ConversionError, match=setting):
        build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)
    assert setting in (valid_targets(checkpoint)[CheckpointKind.TRANSFORMERS] or "")


def test_missing_qk_norm_rejected(tmp_path: Path) -> None:
    tensors = olmo2_trainer_tensors()
    del tensors["transformer.blocks.0.q_norm.weight"]
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_UNSHARDED, tensors, olmo_trainer_config()
    )

    with pytest.raises(ConversionError, match="q_norm"):
        build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)


def test_unknown_tensor_rejected(tmp_path: Path) -> None:
    tensors = olmo2_trainer_tensors()
    tensors["transformer.blocks.0.extra.weight"] = torch.zeros(4)
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_UNSHARDED, tensors, olmo_trainer_config()
    )

    with pytest.raises(ConversionError, match=r"transformer\.blocks\.0\.extra\.weight"):
        build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)


def test_att_proj_rows_must_match_config(tmp_path: Path) -> None:
    tensors = olmo2_trainer_tensors()
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_UNSHARDED, tensors, olmo_trainer_config(n_kv_heads=4)
    )

    with pytest.raises(ConversionError, match="att_proj"):
        build_mapping(checkpoint, CheckpointKind.TRANSFORMERS)


def test_rotary_buffers_are_dropped(tmp_path: Path) -> None:
    hf_dir = tiny_transformers_model("olmo", tmp_path / "hf", tied=True)
    hf_tensors, hf_config = read_transformers_dir(hf_dir)
    hf_tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    checkpoint = checkpoint_from_tensors(hf_dir, CheckpointKind.TRANSFORMERS, hf_tensors, hf_config)

    for target in (CheckpointKind.OLMO_UNSHARDED, CheckpointKind.TRANSFORMERS):
        result = build_mapping(checkpoint, target)
        assert "model.layers.0.self_attn.rotary_emb.inv_freq" in result.dropped
        assert all(
            source.name != "model.layers.0.self_attn.rotary_emb.inv_freq"
            for mapping in result.mappings
            for source in mapping.sources
        )


def test_identity_maps_every_tensor(tmp_path: Path) -> None:
    tensors = olmo2_trainer_tensors(layers=2)
    config = olmo_trainer_config(n_layers=2)
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_SHARDED_TORCH_NEW, tensors, config
    )

    result = build_mapping(checkpoint, CheckpointKind.OLMO_UNSHARDED)

    assert mapping_shapes(result) == {name: tuple(t.shape) for name, t in tensors.items()}
    assert all(m.sources[0].name == m.target and m.sources[0].rows is None for m in result.mappings)
    assert yaml.safe_load(result.files["config.yaml"]) == config


def test_sharded_targets_rejected(tmp_path: Path) -> None:
    checkpoint = checkpoint_from_tensors(
        tmp_path, CheckpointKind.OLMO_UNSHARDED, olmo2_trainer_tensors(), olmo_trainer_config()
    )

    reasons = valid_targets(checkpoint)

    assert reasons[CheckpointKind.OLMO_UNSHARDED] is None
    assert reasons[CheckpointKind.TRANSFORMERS] is None
    assert reasons[CheckpointKind.HF_OLMO] is None
    for kind in CheckpointKind:
        if kind.is_sharded:
            assert "olmo-unsharded" in (reasons[kind] or ""), kind
    with pytest.raises(ConversionError, match="unsharded"):
        build_mapping(checkpoint, CheckpointKind.OLMO_SHARDED_LOCAL)


def test_canonical_names_of_fused_weights() -> None:
    config = olmo_trainer_config()

    attention = to_canonical(
        "transformer.blocks.0.att_proj.weight", CheckpointKind.OLMO_UNSHARDED, config
    )
    feed_forward = to_canonical(
        "model.transformer.blocks.0.ff_proj.weight",
        CheckpointKind.HF_OLMO,
        config["model"],
    )
    plain = to_canonical("model.layers.0.mlp.up_proj.weight", CheckpointKind.TRANSFORMERS, {})

    assert [(part.name, part.rows) for part in attention] == [
        ("model.layers.0.self_attn.q_proj.weight", (0, 16)),
        ("model.layers.0.self_attn.k_proj.weight", (16, 24)),
        ("model.layers.0.self_attn.v_proj.weight", (24, 32)),
    ]
    assert [(part.name, part.rows) for part in feed_forward] == [
        ("model.layers.0.mlp.up_proj.weight", (0, 32)),
        ("model.layers.0.mlp.gate_proj.weight", (32, 64)),
    ]
    assert [(part.name, part.rows) for part in plain] == [
        ("model.layers.0.mlp.up_proj.weight", None)
    ]
