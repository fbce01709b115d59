"""Tests for grouping tensor names into a module tree with repeated blocks folded."""

from __future__ import annotations

from tui_records import LAYERS, block_shapes, model_shapes, unsharded_checkpoint

from olmo_inspect.model import TensorInfo
from olmo_inspect.tui.tensor_groups import TensorGroup, filter_tensors, group_tensors


def _find(groups: list[TensorGroup], label: str) -> TensorGroup:
    for group in groups:
        if group.label == label:
            return group
    raise AssertionError(f"no node {label!r} among {[group.label for group in groups]}")


def _tensor(name: str, shape: tuple[int, ...], dtype: str = "float32") -> TensorInfo:
    return TensorInfo(name=name, shape=shape, dtype=dtype, file="model.safetensors")


def test_olmo_blocks_fold_into_one_node() -> None:
    checkpoint = unsharded_checkpoint()

    (transformer,) = group_tensors(checkpoint.tensors)
    blocks = _find(transformer.children, "blocks.[0-15]")

    assert transformer.label == "transformer"
    assert blocks.indices == list(range(LAYERS))
    assert blocks.tensor_count == LAYERS * len(block_shapes())
    block_bytes = sum(t.nbytes for t in checkpoint.tensors if ".blocks." in t.name)
    assert blocks.nbytes == block_bytes


def test_folded_node_shows_lowest_block() -> None:
    checkpoint = unsharded_checkpoint()

    (transformer,) = group_tensors(checkpoint.tensors)
    blocks = _find(transformer.children, "blocks.[0-15]")
    shown = [tensor.name for tensor in blocks.iter_tensors()]

    assert shown == [f"transformer.blocks.0.{name}" for name in block_shapes()]


def test_totals_count_every_tensor() -> None:
    checkpoint = unsharded_checkpoint()

    (transformer,) = group_tensors(checkpoint.tensors)

    assert transformer.tensor_count == len(model_shapes())
    assert transformer.nbytes == checkpoint.nbytes


def test_different_blocks_fold_separately() -> None:
    tensors = []
    for index in range(6):
        tensors.append(_tensor(f"model.layers.{index}.mlp.weight", (8, 4)))
        # Odd layers are linear attention, even ones full attention.
        mixer = "linear_attn" if index % 2 else "self_attn"
        tensors.append(_tensor(f"model.layers.{index}.{mixer}.weight", (4, 4)))

    (layers,) = group_tensors(tensors)
    labels = [child.label for child in layers.children]

    assert layers.label == "model.layers"
    assert labels == ["[0, 2, 4]", "[1, 3, 5]"]
    assert layers.tensor_count == 12


def test_changed_shape_breaks_fold() -> None:
    tensors = [_tensor(f"blocks.{index}.w", (4, 4)) for index in range(3)]
    tensors.append(_tensor("blocks.3.w", (4, 8)))

    (blocks,) = group_tensors(tensors)

    assert [child.label for child in blocks.children] == ["[0-2]", "3"]


def test_single_index_is_not_folded() -> None:
    tensors = [_tensor("transformer.blocks.3.att_proj.weight", (24, 8))]

    (node,) = group_tensors(tensors)

    assert node.label == "transformer.blocks.3.att_proj"
    assert not node.folded
    assert node.children[0].tensor is tensors[0]


def test_filter_is_case_insensitive_substring() -> None:
    checkpoint = unsharded_checkpoint()
    expected = [t.name for t in checkpoint.tensors if "att_proj" in t.name]

    shown = filter_tensors(checkpoint.tensors, "ATT_Proj")

    assert [tensor.name for tensor in shown] == expected
    assert len(filter_tensors(checkpoint.tensors, "  ")) == len(checkpoint.tensors)


def test_leading_zero_keys_are_not_indices() -> None:
    tensors = [_tensor("experts.01.w", (2,)), _tensor("experts.1.w", (2,))]

    (experts,) = group_tensors(tensors)

    assert [child.label for child in experts.children] == ["01", "1"]
