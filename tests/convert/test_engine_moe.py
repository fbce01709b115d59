"""End-to-end conversion of OLMo-core MoE checkpoints to Transformers ``flex_olmo``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from convert_helpers import convert, digest_tree, open_checkpoint
from mapping_helpers import (
    NUM_EXPERTS,
    apply_mapping,
    flex_olmo_model,
    moe_config,
    olmo_core_moe_tensors,
    read_safetensors,
)
from safetensors.torch import save_file

from olmo_inspect.convert import engine
from olmo_inspect.convert.layout import Method
from olmo_inspect.convert.mapping import TRANSFORM_TRANSPOSE, build_mapping
from olmo_inspect.model import CheckpointKind

# Token ids of the logits comparison; any ids below the tiny models' vocab size of 128 work.
PROMPT_IDS = [[5, 17, 3, 99, 42, 7, 64, 1]]
EXPERT_LAYOUTS = [
    pytest.param(False, False, id="moe-mlp-2d"),
    pytest.param(True, False, id="dropless-2d"),
    pytest.param(False, True, id="moe-mlp-3d"),
    pytest.param(True, True, id="dropless-3d"),
]
# OLMo-core's weight tensors of each expert; MoEMLP stores all three transposed.
EXPERT_WEIGHT_NAMES = ("w1", "w2", "w3")


def write_olmo_core_moe(
    folder: Path, dropless: bool, three_dimensional: bool, reference: Path
) -> dict[str, torch.Tensor]:
    """Write an OLMo-core unsharded MoE checkpoint holding a saved FlexOlmo model's weights.

    Returns the OLMo-core tensors as written (plain keys, as ``unshard_checkpoint`` saves them).
    """
    hf_tensors, _ = flex_olmo_model(reference)
    core_tensors = olmo_core_moe_tensors(hf_tensors, dropless, three_dimensional)
    folder.mkdir()
    save_file(core_tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(moe_config(dropless), indent=2))
    return core_tensors


@pytest.mark.parametrize(("dropless", "three_dimensional"), EXPERT_LAYOUTS)
def test_moe_convert_matches_mapping(
    tmp_path: Path, dropless: bool, three_dimensional: bool
) -> None:
    source = tmp_path / "olmo-core"
    core_tensors = write_olmo_core_moe(source, dropless, three_dimensional, tmp_path / "reference")
    before = digest_tree(source)
    checkpoint = open_checkpoint(source)
    expected = {
        mapping.target: apply_mapping(mapping, core_tensors)
        for mapping in build_mapping(checkpoint, CheckpointKind.TRANSFORMERS).mappings
    }

    result = convert(source, CheckpointKind.TRANSFORMERS, tmp_path / "hf")

    written = read_safetensors(tmp_path / "hf" / "model.safetensors")
    assert checkpoint.kind == CheckpointKind.OLMO_CORE_UNSHARDED
    assert sorted(written) == sorted(expected)
    for name, value in expected.items():
        assert written[name].dtype == value.dtype, name
        assert torch.equal(written[name], value), name
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "flex_olmo"
    assert result.verify is not None
    assert result.verify.ok
    assert result.verify.checked == len(expected)
    assert digest_tree(source) == before


@pytest.mark.parametrize(("dropless", "three_dimensional"), EXPERT_LAYOUTS)
def test_moe_convert_restores_flex_olmo(
    tmp_path: Path, dropless: bool, three_dimensional: bool
) -> None:
    from transformers import FlexOlmoForCausalLM

    source = tmp_path / "olmo-core"
    write_olmo_core_moe(source, dropless, three_dimensional, tmp_path / "reference")
    reference_tensors = read_safetensors(tmp_path / "reference" / "model.safetensors")

    convert(source, CheckpointKind.TRANSFORMERS, tmp_path / "hf", verify=False)
    model, loading = FlexOlmoForCausalLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    reference = FlexOlmoForCausalLM.from_pretrained(tmp_path / "reference")

    written = read_safetensors(tmp_path / "hf" / "model.safetensors")
    assert sorted(written) == sorted(reference_tensors)
    for name, value in reference_tensors.items():
        assert torch.equal(written[name], value), name
    assert sorted(loading["missing_keys"]) == []
    assert sorted(loading["unexpected_keys"]) == []
    assert sorted(loading["mismatched_keys"]) == []
    with torch.no_grad():
        ours = model.eval()(torch.tensor(PROMPT_IDS)).logits
        theirs = reference.eval()(torch.tensor(PROMPT_IDS)).logits
    assert torch.equal(ours, theirs)


def test_moe_expert_transposes_are_materialised(tmp_path: Path) -> None:
    source = tmp_path / "olmo-core"
    write_olmo_core_moe(source, False, False, tmp_path / "reference")
    checkpoint = open_checkpoint(source)

    plan = engine.plan(
        checkpoint, CheckpointKind.TRANSFORMERS, engine.ConvertOptions(output=tmp_path / "hf")
    )

    transposed = [step for step in plan.steps if step.transform == TRANSFORM_TRANSPOSE]
    n_layers = moe_config(False)["model"]["n_layers"]
    assert len(transposed) == n_layers * NUM_EXPERTS * len(EXPERT_WEIGHT_NAMES)
    for step in transposed:
        assert step.method == Method.MATERIALISE, step.target
    for step in plan.steps:
        if step.transform is None:
            assert step.method == Method.COPY, step.target
