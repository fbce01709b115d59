"""The tensor filter: globs over dotted name parts, ``|`` alternatives, and clearing it."""

from __future__ import annotations

import re

import pytest
from tui_helpers import records_loader, wait_for_load
from tui_records import UNSHARDED_PATH, unsharded_checkpoint

from olmo_inspect.model import TensorInfo
from olmo_inspect.tui import InspectApp
from olmo_inspect.tui.tensor_groups import filter_tensors
from olmo_inspect.tui.widgets.filter_input import FilterInput
from olmo_inspect.tui.widgets.tensor_tree import TensorTree

SIZE = (160, 50)

NAMES = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.12.self_attn.q_proj.weight",
    "model.layers.12.post_attention_layernorm.weight",
    "model.norm.weight",
    "blocks.0.attention.w_q.weight",
    "blocks.0.attention.W_K.weight",
    "blocks.0.attention.w_v.weight",
]


def _tensors() -> list[TensorInfo]:
    return [TensorInfo(name=name, shape=(4,), dtype="float32", file="m") for name in NAMES]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*norm", [name for name in NAMES if re.search(r"norm(\.|$)", name)]),
        ("layers.1?.*", [name for name in NAMES if ".layers.12." in name]),
        ("w_q|w_k", [name for name in NAMES if re.search(r"w_[qk]\.", name, re.IGNORECASE)]),
        ("Q_PROJ", [name for name in NAMES if "q_proj" in name]),
        ("*.w_?.weight | embed", [NAMES[0], *NAMES[7:]]),
        ("  ", NAMES),
    ],
)
def test_filter_syntax_cases(text: str, expected: list[str]) -> None:
    shown = [tensor.name for tensor in filter_tensors(_tensors(), text)]

    assert shown == expected


async def test_section_label_counts_matches() -> None:
    checkpoint = unsharded_checkpoint()
    total = len(checkpoint.tensors)
    matches = [t for t in checkpoint.tensors if re.search(r"\.blocks\.1\d\.", t.name)]

    app = InspectApp([UNSHARDED_PATH], loader=records_loader({UNSHARDED_PATH: checkpoint}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press("slash", *"blocks.1?.*")
        await pilot.pause()
        tree = app.screen.query_one(TensorTree)
        section = tree.root.children[0].label.plain

    assert section.startswith(f"Model  {len(matches)} of {total} tensors, ")


async def test_clearing_filter_restores_expansion() -> None:
    checkpoint = unsharded_checkpoint()

    app = InspectApp([UNSHARDED_PATH], loader=records_loader({UNSHARDED_PATH: checkpoint}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        tree = app.screen.query_one(TensorTree)
        blocks = next(
            node for node in tree.iter_nodes() if node.label.plain.startswith("blocks.[0-15]")
        )
        optimizer = tree.root.children[1]
        blocks.expand()
        optimizer.expand()
        tree.move_cursor(blocks)
        await pilot.pause()
        before = {node.label.plain for node in tree.iter_nodes() if node.is_expanded}

        await pilot.press("slash", *"ff_out")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        await pilot.pause()
        after = {node.label.plain for node in tree.iter_nodes() if node.is_expanded}
        cursor = tree.cursor_node.label.plain if tree.cursor_node else None
        filter_value = app.screen.query_one(FilterInput).value

    assert filter_value == ""
    assert any(label.startswith("blocks.[0-15]") for label in after)
    assert any(label.startswith("Optimizer") for label in after)
    assert after == before
    assert cursor is not None
    assert cursor.startswith("blocks.[0-15]")
