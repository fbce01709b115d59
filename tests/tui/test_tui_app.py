"""Drive the inspector app with Pilot, on sample checkpoints and hand-built records."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import TabbedContent
from tui_helpers import records_loader, static_text, table_rows, wait_for_load
from tui_records import (
    HOSTILE_CONFIG,
    HOSTILE_FILE,
    HOSTILE_PROBLEM,
    HOSTILE_TENSOR,
    SHARDED_PATH,
    UNSHARDED_PATH,
    hostile_checkpoint,
    run_folder,
    sharded_checkpoint,
    unsharded_checkpoint,
)

from olmo_inspect.errors import EXIT_INVALID, EXIT_OK
from olmo_inspect.model import Checkpoint, CheckpointKind
from olmo_inspect.tui import InspectApp
from olmo_inspect.tui.screens.error import ErrorScreen
from olmo_inspect.tui.screens.inspect import InspectScreen
from olmo_inspect.tui.screens.loading import LoadingScreen
from olmo_inspect.tui.screens.run_folder import RunFolderScreen
from olmo_inspect.tui.text import format_count, format_shape
from olmo_inspect.tui.widgets.checkpoint_header import CheckpointHeader
from olmo_inspect.tui.widgets.config_view import ConfigView
from olmo_inspect.tui.widgets.files_table import FilesTable
from olmo_inspect.tui.widgets.filter_input import FilterInput
from olmo_inspect.tui.widgets.problems_view import ProblemsView
from olmo_inspect.tui.widgets.run_table import RunTable
from olmo_inspect.tui.widgets.shard_layout import ShardLayout
from olmo_inspect.tui.widgets.tensor_details import TensorDetails
from olmo_inspect.tui.widgets.tensor_tree import TensorTree
from olmo_inspect.tui.widgets.train_state_view import TrainStateView

SIZE = (160, 50)
# Palette areas of the inspect screen's own entries (theme and app entries are Textual's).
INSPECT_AREAS = {"view", "tensors", "export", "convert", "diff"}
REPO_ROOT = Path(__file__).resolve().parents[2]

# Block indices other than 0: a folded tree shows block 0 in their place.
LATER_BLOCK = re.compile(r"\.blocks\.([1-9]\d*)\.")

SampleFactory = Callable[..., object]


def _folded_names(names: list[str]) -> list[str]:
    return [name for name in names if not LATER_BLOCK.search(name)]


def _tree_names(app: InspectApp) -> list[str]:
    return [tensor.name for tensor in app.screen.query_one(TensorTree).shown_tensors()]


def _model_names(app: InspectApp) -> list[str]:
    checkpoint = app.screen.checkpoint
    return [
        tensor.name
        for tensor in app.screen.query_one(TensorTree).shown_tensors()
        if tensor in checkpoint.tensors
    ]


async def test_sample_header_shows_kind_step_verdict(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")
    parameters = sum(tensor.numel() for tensor in sample.tensors.values())

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        header = static_text(app.screen.query_one(CheckpointHeader))

    assert "olmo-unsharded" in header
    assert str(sample.path) in header
    assert f"step {format_count(sample.train_state['global_step'])}" in header
    assert f"{format_count(parameters)} parameters" in header
    assert "✔ complete" in header


async def test_sample_tree_folds_blocks(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")
    expected = _folded_names(list(sample.tensors))

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        shown = _model_names(app)
        labels = [str(node.label) for node in app.screen.query_one(TensorTree).iter_nodes()]

    assert sorted(shown) == sorted(expected)
    assert any(label.startswith("blocks.[0-1]") for label in labels)


async def test_sample_optimizer_branch(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")
    expected = _folded_names(list(sample.optimizer_tensors))

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        optimizer = app.screen.checkpoint.optimizer
        shown = [
            tensor.name
            for tensor in app.screen.query_one(TensorTree).shown_tensors()
            if tensor in optimizer.tensors
        ]

    assert sorted(shown) == sorted(expected)


async def test_filter_narrows_tree_and_escape_clears(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")
    everything = _folded_names(list(sample.tensors))
    matching = [name for name in everything if "ff_proj" in name.casefold()]

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press("slash")
        assert isinstance(app.focused, FilterInput)

        await pilot.press(*"FF_proj")
        await pilot.pause()
        filtered = _model_names(app)

        await pilot.press("escape")
        await pilot.pause()
        cleared = _model_names(app)
        filter_value = app.screen.query_one(FilterInput).value

    assert filtered == matching
    assert filter_value == ""
    assert sorted(cleared) == sorted(everything)


async def test_filter_with_no_match_shows_none(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press("slash", *"no-such-tensor")
        await pilot.pause()
        shown = _tree_names(app)

    assert shown == []


async def test_selected_tensor_details(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")
    name = "transformer.blocks.0.att_proj.weight"
    tensor = sample.tensors[name]

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        # Filtering puts the cursor on the first match; enter hands the focus to the tree.
        await pilot.press("slash", *"att_proj", "enter")
        await pilot.pause()
        focused = app.focused
        details = static_text(app.screen.query_one(TensorDetails))

    dtype = str(tensor.dtype).removeprefix("torch.")
    assert isinstance(focused, TensorTree)
    assert name in details
    assert format_shape(tuple(tensor.shape)) in details
    assert dtype in details
    assert format_count(tensor.numel() * tensor.element_size()) in details
    assert "blocks 0-1" in details


async def test_number_keys_switch_tabs(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")
    config_text = (sample.path / "config.yaml").read_text()
    first_config_line = config_text.splitlines()[0]
    disk_files = sorted(
        str(path.relative_to(sample.path)) for path in sample.path.rglob("*") if path.is_file()
    )

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        tabs = app.screen.query_one(TabbedContent)

        await pilot.press("2")
        config_tab = tabs.active
        config = static_text(app.screen.query_one(ConfigView).query_one("#config-text"))

        await pilot.press("3")
        train_tab = tabs.active
        train = static_text(app.screen.query_one(TrainStateView))

        await pilot.press("4")
        files_tab = tabs.active
        files = table_rows(app.screen.query_one(FilesTable))

        await pilot.press("6")
        problems_tab = tabs.active

        await pilot.press("1")
        tensors_tab = tabs.active

    assert [config_tab, train_tab, files_tab, problems_tab, tensors_tab] == [
        "config",
        "train-state",
        "files",
        "problems",
        "tensors",
    ]
    assert first_config_line in config
    assert format_count(sample.train_state["global_step"]) in train
    assert sorted(row[0] for row in files) == disk_files


async def test_unsharded_has_no_shards_tab(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press("5")
        active = app.screen.query_one(TabbedContent).active
        titles = [command.title for command in app.get_system_commands(app.screen)]

    assert active == "tensors"
    assert "view: Shards" not in titles


async def test_sharded_sample_layout(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-sharded-torch-legacy")
    rows = sample.tensors["transformer.wte.weight"].shape[0]

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press("5")
        active = app.screen.query_one(TabbedContent).active
        layout = static_text(app.screen.query_one(ShardLayout))

    assert active == "shards"
    assert "transformer.wte.weight" in layout
    assert f"Every one of the {format_count(rows)} rows is stored." in layout
    assert "rank0.pt" in layout
    assert "rank1.pt" in layout


async def test_missing_rank_file_shown(sample_factory: SampleFactory, tmp_path: Path) -> None:
    sample = sample_factory("olmo1-sharded-torch-legacy")
    copy = tmp_path / "step3"
    shutil.copytree(sample.path, copy)
    (copy / "rank1.pt").unlink()

    app = InspectApp([copy])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        screen = app.screen
        header = static_text(screen.query_one(CheckpointHeader))
        problems = static_text(screen.query_one(ProblemsView))

    assert isinstance(screen, InspectScreen)
    assert "✘ incomplete" in header
    assert "rank1" in problems


async def test_hand_built_missing_rank_rows() -> None:
    checkpoint = sharded_checkpoint(world_size=2, missing_rank=1)
    rows = checkpoint.tensor("transformer.wte.weight").shape[0]

    app = InspectApp([SHARDED_PATH], loader=records_loader({SHARDED_PATH: checkpoint}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        header = static_text(app.screen.query_one(CheckpointHeader))
        await pilot.press("5")
        layout = static_text(app.screen.query_one(ShardLayout))

    assert "✘ incomplete: 1 problem" in header
    assert f"rows [{rows // 2:,}, {rows:,})" in layout


async def test_run_folder_open_and_back(sample_factory: SampleFactory, tmp_path: Path) -> None:
    sample = sample_factory("olmo1-unsharded")
    run = tmp_path / "run"
    for step in ("step2", "step3"):
        shutil.copytree(sample.path, run / step)
    (run / "latest").symlink_to("step3")

    app = InspectApp([run])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        picker = app.screen
        rows = table_rows(picker.query_one(RunTable))
        latest_row = next(index for index, row in enumerate(rows) if row[4] == "latest")
        table = picker.query_one(RunTable)
        table.move_cursor(row=latest_row)
        await pilot.press("enter")
        await wait_for_load(pilot)
        opened = app.screen
        await pilot.press("escape")
        await pilot.pause()
        back = app.screen

    assert isinstance(picker, RunFolderScreen)
    assert sorted(row[0] for row in rows) == ["2", "3"]
    assert rows[latest_row][0] == "3"
    assert all(row[1] == str(CheckpointKind.OLMO_UNSHARDED) for row in rows)
    assert isinstance(opened, InspectScreen)
    assert opened.checkpoint.path.name == "step3"
    assert back is picker


async def test_several_targets_start_on_picker() -> None:
    records = {UNSHARDED_PATH: unsharded_checkpoint(), SHARDED_PATH: sharded_checkpoint()}

    app = InspectApp([UNSHARDED_PATH, SHARDED_PATH], loader=records_loader(records))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        picker = app.screen
        rows = table_rows(picker.query_one(RunTable))
        await pilot.press("down", "enter")
        await pilot.pause()
        opened = app.screen

    assert isinstance(picker, RunFolderScreen)
    assert [row[5] for row in rows] == [UNSHARDED_PATH.name, SHARDED_PATH.name]
    assert [row[1] for row in rows] == [str(path_record.kind) for path_record in records.values()]
    assert isinstance(opened, InspectScreen)
    assert opened.checkpoint is records[SHARDED_PATH]


async def test_run_folder_record_marks_latest() -> None:
    folder = run_folder()
    records = {folder.path: folder, UNSHARDED_PATH: unsharded_checkpoint()}

    app = InspectApp([folder.path], loader=records_loader(records))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        rows = table_rows(app.screen.query_one(RunTable))
        titles = [command.title for command in app.get_system_commands(app.screen)]

    latest = [row[5] for row in rows if row[4] == "latest"]
    expected = [entry.path.name for entry in folder.checkpoints if entry.latest]
    assert latest == expected
    assert "run: Open latest" in titles


async def test_missing_path_shows_error_screen(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"

    app = InspectApp([missing])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        screen = app.screen
        await pilot.press("q")

    assert isinstance(screen, ErrorScreen)
    assert str(missing) in screen.message
    assert app.return_code == EXIT_INVALID


async def test_empty_folder_shows_error(tmp_path: Path) -> None:
    app = InspectApp([tmp_path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        screen = app.screen

    assert isinstance(screen, ErrorScreen)
    assert str(tmp_path) in screen.message


async def test_picker_error_goes_back() -> None:
    bad = Path("/data/not-a-checkpoint")
    records = {UNSHARDED_PATH: unsharded_checkpoint()}

    app = InspectApp([UNSHARDED_PATH, bad], loader=records_loader(records))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        rows = table_rows(app.screen.query_one(RunTable))
        await pilot.press("down", "enter")
        await pilot.pause()
        error = app.screen
        await pilot.press("escape")
        await pilot.pause()
        back = app.screen
        await pilot.press("q")

    assert "✘ 1 problem" in rows[1][3]
    assert isinstance(error, ErrorScreen)
    assert isinstance(back, RunFolderScreen)
    assert app.return_code == EXIT_OK


async def test_loading_screen_until_loader_returns() -> None:
    release = threading.Event()
    checkpoint = unsharded_checkpoint()

    def slow_loader(path: Path, deep: bool) -> Checkpoint:
        release.wait()
        return checkpoint

    app = InspectApp([UNSHARDED_PATH], loader=slow_loader)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        during = app.screen
        release.set()
        await wait_for_load(pilot)
        after = app.screen

    assert isinstance(during, LoadingScreen)
    assert isinstance(after, InspectScreen)
    assert after.checkpoint is checkpoint


async def test_hostile_record_shown_literally() -> None:
    checkpoint = hostile_checkpoint()

    app = InspectApp([checkpoint.path], loader=records_loader({checkpoint.path: checkpoint}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        screen = app.screen
        tree_labels = [node.label.plain for node in screen.query_one(TensorTree).iter_nodes()]
        details = static_text(screen.query_one(TensorDetails))
        problems = static_text(screen.query_one(ProblemsView))
        config = static_text(screen.query_one(ConfigView).query_one("#config-text"))
        files = table_rows(screen.query_one(FilesTable))
        header = static_text(screen.query_one(CheckpointHeader))
        svg = app.export_screenshot()

    assert any(label.startswith("[red]x\\x1b[2J") for label in tree_labels)
    assert HOSTILE_TENSOR.replace("\x1b", "\\x1b") in details
    assert HOSTILE_FILE.replace("\x1b", "\\x1b").replace("\x07", "\\x07") in details
    assert HOSTILE_PROBLEM.replace("\x1b", "\\x1b").replace("\r", "\\x0d") in problems
    assert "[link=http://example.invalid]click[/link]" in config
    assert "\\x1b[2J" in config
    assert HOSTILE_CONFIG.count("\n") <= config.count("\n")
    assert files[0][0] == HOSTILE_FILE.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    assert "[blink]step1" in header
    for control in ("\x1b", "\x07", "\r"):
        assert control not in svg


async def test_hostile_safetensors_names(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    name = "[red]x\x1b[2J.weight"
    path = tmp_path / "model.safetensors"
    save_file({name: torch.zeros(4, 4)}, str(path))

    app = InspectApp([path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        screen = app.screen
        labels = [node.label.plain for node in screen.query_one(TensorTree).iter_nodes()]
        svg = app.export_screenshot()

    assert isinstance(screen, InspectScreen)
    assert any(label.startswith("[red]x\\x1b[2J") for label in labels)
    assert "\x1b" not in svg


async def test_q_quits_but_types_in_filter() -> None:
    checkpoint = unsharded_checkpoint()

    app = InspectApp([UNSHARDED_PATH], loader=records_loader({UNSHARDED_PATH: checkpoint}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press("slash", "q")
        typed = app.screen.query_one(FilterInput).value
        still_running = app.return_code is None
        await pilot.press("escape", "q")

    assert typed == "q"
    assert still_running
    assert app.return_code == EXIT_OK


async def test_export_json_writes_to_cwd(
    sample_factory: SampleFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = sample_factory("olmo1-unsharded")
    before = sorted(os.listdir(sample.path))
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press("e")
        await pilot.press("e")
        await pilot.pause()

    first = out / f"olmo-inspect-{sample.path.name}.json"
    second = out / f"olmo-inspect-{sample.path.name}-1.json"
    document = json.loads(first.read_text())
    assert sorted(out.iterdir()) == sorted([first, second])
    assert document["kind"] == str(sample.kind)
    assert sorted(tensor["name"] for tensor in document["tensors"]) == sorted(sample.tensors)
    assert sorted(os.listdir(sample.path)) == before


async def test_export_refused_inside_checkpoint(
    sample_factory: SampleFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = sample_factory("olmo1-unsharded")
    copy = tmp_path / "ckpt"
    shutil.copytree(sample.path, copy)
    before = sorted(os.listdir(copy))
    monkeypatch.chdir(copy)

    app = InspectApp([copy])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press("e")
        await pilot.pause()
        messages = [notification.message for notification in app._notifications]

    assert sorted(os.listdir(copy)) == before
    assert any("inside the checkpoint" in message for message in messages)


async def test_palette_commands_follow_screen() -> None:
    unsharded = unsharded_checkpoint()
    sharded = sharded_checkpoint()
    records = {UNSHARDED_PATH: unsharded, SHARDED_PATH: sharded}

    app = InspectApp([UNSHARDED_PATH, SHARDED_PATH], loader=records_loader(records))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        picker_titles = [command.title for command in app.get_system_commands(app.screen)]
        await pilot.press("enter")
        await pilot.pause()
        unsharded_titles = [command.title for command in app.get_system_commands(app.screen)]
        await pilot.press("escape", "down", "enter")
        await pilot.pause()
        sharded_titles = [command.title for command in app.get_system_commands(app.screen)]

    for title in picker_titles + unsharded_titles + sharded_titles:
        assert re.fullmatch(r"[a-z]+: [A-Z][\w ]*", title), title
    assert "run: Open selected" in picker_titles
    assert "tensors: Filter" not in picker_titles
    assert {"tensors: Filter", "export: JSON", "app: Quit"} <= set(unsharded_titles)
    assert "view: Shards" not in unsharded_titles
    assert "view: Shards" in sharded_titles
    assert "view: Back" in sharded_titles


async def test_palette_view_command_switches_tab() -> None:
    checkpoint = sharded_checkpoint()

    app = InspectApp([SHARDED_PATH], loader=records_loader({SHARDED_PATH: checkpoint}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        command = next(
            command
            for command in app.get_system_commands(app.screen)
            if command.title == "view: Shards"
        )
        command.callback()
        await pilot.pause()
        active = app.screen.query_one(TabbedContent).active

    assert active == "shards"


async def test_palette_entries_all_act(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = sharded_checkpoint()
    monkeypatch.chdir(tmp_path)

    app = InspectApp([SHARDED_PATH], loader=records_loader({SHARDED_PATH: checkpoint}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        commands = {command.title: command for command in app.get_system_commands(app.screen)}
        inspect_titles = {title for title in commands if title.split(":")[0] in INSPECT_AREAS}

        commands["view: Maximize"].callback()
        await pilot.pause()
        maximized = app.screen.maximized
        app.screen.action_minimize()
        await pilot.pause()

        commands["view: Shards"].callback()
        await pilot.pause()
        shards_active = app.screen.query_one(TabbedContent).active
        commands["tensors: Filter"].callback()
        await pilot.pause()
        filter_focused = isinstance(app.focused, FilterInput)
        commands["export: JSON"].callback()
        await pilot.pause()
        exported = sorted(path.name for path in tmp_path.iterdir())
        commands["convert: Start"].callback()
        await pilot.pause()
        convert_screen = type(app.screen).__name__

    assert not any(title.startswith("diff:") for title in commands)
    assert inspect_titles == {
        *(f"view: {title}" for title in ("Tensors", "Config", "Trainer state", "Files")),
        "view: Shards",
        "view: Problems",
        "view: Maximize",
        "tensors: Filter",
        "export: JSON",
        "convert: Start",
    }
    assert maximized is not None
    assert shards_active == "shards"
    assert filter_focused
    assert exported == [f"olmo-inspect-{SHARDED_PATH.name}.json"]
    assert convert_screen == "ConvertScreen"


def test_tui_import_skips_torch() -> None:
    code = "import sys, olmo_inspect.tui; print(sorted(m for m in sys.modules if m == 'torch'))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.strip() == "[]"
