"""Layout at 80x24 and narrow widths, and the trainer state's nested values."""

from __future__ import annotations

import dataclasses
import io
import re

from rich.console import Console, RenderableType
from tui_helpers import records_loader, static_text, wait_for_load
from tui_records import SHARDED_PATH, UNSHARDED_PATH, sharded_checkpoint, unsharded_checkpoint

from olmo_inspect.model import Checkpoint, FileInfo, TrainState
from olmo_inspect.tui import InspectApp
from olmo_inspect.tui.screens.inspect import NARROW_CLASS
from olmo_inspect.tui.widgets.filter_input import FilterInput
from olmo_inspect.tui.widgets.rank_balance import balance_renderable
from olmo_inspect.tui.widgets.tensor_details import TensorDetails
from olmo_inspect.tui.widgets.tensor_tree import TensorTree
from olmo_inspect.tui.widgets.train_state_view import TrainStateView

SMALL = (80, 24)
DCP_FILE = "model_and_optim/__{rank}_0.distcp"
DCP_NAME = re.compile(r"__\d_0\.distcp")


def render_text(renderable: RenderableType, width: int) -> str:
    """Render ``renderable`` to plain text on a terminal ``width`` columns wide."""
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def dcp_named_checkpoint() -> Checkpoint:
    """Return the sharded test record with its rank files renamed as DCP writes them."""
    checkpoint = sharded_checkpoint(world_size=2)
    for tensor in checkpoint.tensors:
        tensor.shards = [
            dataclasses.replace(piece, file=DCP_FILE.format(rank=piece.rank))
            for piece in tensor.shards
        ]
    checkpoint.files = [
        FileInfo(
            path=DCP_FILE.format(rank=info.rank) if info.rank is not None else info.path,
            bytes=info.bytes,
            role=info.role,
            rank=info.rank,
            tensors=info.tensors,
        )
        for info in checkpoint.files
    ]
    return checkpoint


async def test_small_terminal_stacks_panes() -> None:
    checkpoint = dcp_named_checkpoint()

    app = InspectApp([SHARDED_PATH], loader=records_loader({SHARDED_PATH: checkpoint}))
    async with app.run_test(size=SMALL) as pilot:
        await wait_for_load(pilot)
        screen = app.screen
        tree = screen.query_one(TensorTree)
        details = screen.query_one(TensorDetails)
        filter_input = screen.query_one(FilterInput)
        narrow = screen.has_class(NARROW_CLASS)
        tree_region = tree.region
        details_region = details.region
        filter_width = filter_input.content_region.width
        details_text = static_text(details, width=details.content_region.width)

    assert narrow
    assert details_region.y >= tree_region.bottom
    assert tree_region.width >= SMALL[0] - 4
    assert len(filter_input.placeholder) <= filter_width
    file_lines = [line for line in details_text.splitlines() if "distcp" in line]
    assert file_lines
    assert all(DCP_NAME.search(line) for line in file_lines), details_text


def test_rank_files_not_wrapped_when_narrow() -> None:
    checkpoint = dcp_named_checkpoint()

    text = render_text(balance_renderable(checkpoint), width=40)

    file_lines = [line for line in text.splitlines() if "distcp" in line]
    assert len(file_lines) == 2
    assert all(DCP_NAME.search(line) for line in file_lines), text


async def test_trainer_state_nested_values() -> None:
    checkpoint = unsharded_checkpoint()
    loader_state = {"seed": 0, "dataset_type": "fsl", "max_target_sequence_length": None}
    checkpoint.train_state = TrainState(
        file="train.pt",
        step=3,
        tokens_seen=768,
        fields={
            "data_loader": loader_state,
            "callbacks": {"checkpointer": {}, "speed_monitor": {"interval": 10}},
            "betas": [0.9, 0.95],
            "checkpoints": [],
        },
    )

    app = InspectApp([UNSHARDED_PATH], loader=records_loader({UNSHARDED_PATH: checkpoint}))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_load(pilot)
        shown = static_text(app.screen.query_one(TrainStateView))

    lines = [line.rstrip() for line in shown.splitlines()]
    text = "\n".join(lines)
    assert "{" not in text
    assert "None" not in text
    assert re.search(r"^data_loader\s+3 items$", text, re.MULTILINE)
    assert re.search(r"^  seed\s+0$", text, re.MULTILINE)
    assert re.search(r"^  dataset_type\s+fsl$", text, re.MULTILINE)
    assert re.search(r"^  max_target_sequence_length\s+-$", text, re.MULTILINE)
    assert re.search(r"^  checkpointer\s+\(empty\)$", text, re.MULTILINE)
    assert re.search(r"^    interval\s+10$", text, re.MULTILINE)
    assert re.search(r"^betas\s+0\.9, 0\.95$", text, re.MULTILINE)
    assert any(re.fullmatch(r"checkpoints\s+\(empty\)", line) for line in lines)
