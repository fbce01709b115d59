"""Focus, key handling, label spacing and shard byte ranges of the inspect screen."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.widgets import TabbedContent
from tui_helpers import records_loader, static_text, wait_for_load
from tui_records import SHARDED_PATH, UNSHARDED_PATH, sharded_checkpoint, unsharded_checkpoint

from olmo_inspect.errors import EXIT_OK
from olmo_inspect.model import ShardPiece, StoredBytes, dtype_size
from olmo_inspect.tui import InspectApp
from olmo_inspect.tui.text import format_range
from olmo_inspect.tui.widgets.checkpoint_header import CheckpointHeader, header_text
from olmo_inspect.tui.widgets.filter_input import FilterInput
from olmo_inspect.tui.widgets.tensor_details import TensorDetails, piece_byte_range
from olmo_inspect.tui.widgets.tensor_tree import TensorTree

SIZE = (160, 50)
TAB_KEYS = {"1": "tensors", "2": "config", "3": "train-state", "4": "files", "5": "shards"}
TAB_KEYS["6"] = "problems"

SampleFactory = Callable[..., object]


def _sharded_app() -> InspectApp:
    return InspectApp([SHARDED_PATH], loader=records_loader({SHARDED_PATH: sharded_checkpoint()}))


def _runs_with_leading_space(text: Text) -> list[str]:
    """Return the runs that start with spaces an SVG renderer may drop, joining two parts.

    The first run of each line and runs drawn on a background (the kind badge) are exempt.
    """
    console = Console(width=400, color_system="truecolor", file=io.StringIO())
    glued = []
    for line in text.split("\n"):
        runs: list[tuple[str, Style | None]] = []
        for segment in line.render(console):
            if runs and segment.style == runs[-1][1]:
                runs[-1] = (runs[-1][0] + segment.text, segment.style)
            else:
                runs.append((segment.text, segment.style))
        for run, style in runs[1:]:
            on_background = style is not None and (style.bgcolor is not None or style.reverse)
            if run[:1] == " " and run.strip() and not on_background:
                glued.append(run)
    return glued


async def test_opening_focuses_tensor_tree() -> None:
    app = _sharded_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        focused = app.focused

    assert isinstance(focused, TensorTree)


async def test_tab_keys_from_every_tab() -> None:
    app = _sharded_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        tabs = app.screen.query_one(TabbedContent)
        visited = []
        for key in ["1", *TAB_KEYS, "1"]:
            await pilot.press(key)
            await pilot.pause()
            visited.append(tabs.active)
        filter_value = app.screen.query_one(FilterInput).value
        focused = app.focused

    assert visited == [TAB_KEYS[key] for key in ["1", *TAB_KEYS, "1"]]
    assert filter_value == ""
    assert isinstance(focused, TensorTree)


@pytest.mark.parametrize("key", list(TAB_KEYS))
async def test_q_quits_from_tab(key: str) -> None:
    app = _sharded_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press(key)
        await pilot.pause()
        active = app.screen.query_one(TabbedContent).active
        await pilot.press("q")
        await pilot.pause()

    assert active == TAB_KEYS[key]
    assert app.return_code == EXIT_OK


async def test_filter_escape_and_enter_focus_tree() -> None:
    app = _sharded_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press("slash", *"wte", "enter")
        after_enter = app.focused
        kept = app.screen.query_one(FilterInput).value

        await pilot.press("slash", "escape")
        after_escape = app.focused
        cleared = app.screen.query_one(FilterInput).value

        await pilot.press("2")
        active = app.screen.query_one(TabbedContent).active

    assert isinstance(after_enter, TensorTree)
    assert kept == "wte"
    assert isinstance(after_escape, TensorTree)
    assert cleared == ""
    assert active == "config"


def test_header_kind_and_path_apart() -> None:
    checkpoint = unsharded_checkpoint()

    text = header_text(checkpoint, None)
    first_line = text.plain.splitlines()[0]

    assert first_line == f" {checkpoint.kind}   {checkpoint.path}"
    assert _runs_with_leading_space(text) == []


async def test_tree_labels_no_leading_space_runs() -> None:
    app = InspectApp(
        [UNSHARDED_PATH], loader=records_loader({UNSHARDED_PATH: unsharded_checkpoint()})
    )
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        labels = [node.label for node in app.screen.query_one(TensorTree).iter_nodes()]
        header = app.screen.query_one(CheckpointHeader).content

    glued = [label.plain for label in labels if _runs_with_leading_space(label)]
    assert glued == []
    assert _runs_with_leading_space(header) == []
    assert any(label.plain.startswith("Model  ") for label in labels)


async def test_torch_legacy_pieces_show_byte_range(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-sharded-torch-legacy")

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        tensor = app.screen.query_one(TensorDetails).tensor
        details = static_text(app.screen.query_one(TensorDetails), width=240)

    assert tensor is not None
    assert tensor.shards
    for piece in tensor.shards:
        assert piece.data is not None
        assert piece.data.data_start is not None
        itemsize = dtype_size(piece.data.dtype)
        start = piece.data.data_start + piece.data.storage_offset * itemsize
        expected = format_range((start, start + piece.numel * itemsize))
        assert expected in details


def test_piece_byte_range_cases() -> None:
    contiguous = StoredBytes("rank0.pt", "0", "bfloat16", 1000, 4096, 8, (32, 1))
    strided = StoredBytes("rank0.pt", "0", "float32", 64, 4096, 0, (1, 16))
    unknown = StoredBytes("__0_0.distcp", "k", "float32", None, 4096)

    rows = ShardPiece(0, "rank0.pt", "0", 64, offsets=(0, 0), shape=(2, 32), data=contiguous)
    columns = ShardPiece(1, "rank0.pt", "0", 32, offsets=(0, 0), shape=(16, 2), data=strided)
    recorded = ShardPiece(0, "a", "k", 8, flat_range=(0, 8), byte_range=(10, 42), data=unknown)
    missing = ShardPiece(0, "__0_0.distcp", "k", 8, offsets=(0,), shape=(8,), data=unknown)
    bare = ShardPiece(0, "rank0.pt", None, 8)

    assert piece_byte_range(rows) == (1000 + 8 * 2, 1000 + 8 * 2 + 64 * 2)
    # Transposed (16, 2) with stride (1, 16) reaches element 15 + 16 = 31: 32 elements.
    assert piece_byte_range(columns) == (64, 64 + 32 * 4)
    assert piece_byte_range(recorded) == (10, 42)
    assert piece_byte_range(missing) is None
    assert piece_byte_range(bare) is None
