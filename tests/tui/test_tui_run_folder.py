"""The run folder screen: entry problems, folder notes, and run folders in the target picker."""

from __future__ import annotations

import shutil
from pathlib import Path

from textual.widgets import Static
from tui_helpers import records_loader, static_text, table_rows, wait_for_load
from tui_records import SHARDED_PATH, UNSHARDED_PATH, run_folder, unsharded_checkpoint

from olmo_inspect.model import RunFolder
from olmo_inspect.tui import InspectApp
from olmo_inspect.tui.screens.inspect import InspectScreen
from olmo_inspect.tui.screens.run_folder import RunFolderScreen
from olmo_inspect.tui.widgets.run_table import RUN_FOLDER_KIND, RunTable

SIZE = (140, 40)
DANGLING_NOTE = "latest -> step4, which does not exist"
SHARDED_PROBLEMS = ["rank1.pt is missing", "rank1.pt: expected 36 tensors"]


def _folder_with_problems() -> RunFolder:
    folder = run_folder()
    sharded = folder.checkpoints[1]
    sharded.complete = False
    sharded.problems = list(SHARDED_PROBLEMS)
    folder.notes = [DANGLING_NOTE]
    return folder


async def test_run_folder_shows_problems_and_notes() -> None:
    folder = _folder_with_problems()

    app = InspectApp([folder.path], loader=records_loader({folder.path: folder}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        heading = static_text(app.screen.query_one("#run-heading", Static))
        first = static_text(app.screen.query_one("#run-details", Static))
        await pilot.press("down")
        await pilot.pause()
        second = static_text(app.screen.query_one("#run-details", Static))

    assert DANGLING_NOTE in heading
    assert str(folder.checkpoints[0].path) in first
    assert "complete" in first
    assert str(folder.checkpoints[1].path) in second
    for problem in SHARDED_PROBLEMS:
        assert problem in second
        assert problem not in first


async def test_picker_opens_run_folder_target() -> None:
    folder = _folder_with_problems()
    records = {UNSHARDED_PATH: unsharded_checkpoint(), folder.path: folder}

    app = InspectApp([UNSHARDED_PATH, folder.path], loader=records_loader(records))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        picker = app.screen
        rows = table_rows(picker.query_one(RunTable))
        await pilot.press("down")
        await pilot.pause()
        picker_details = static_text(picker.query_one("#run-details", Static))
        await pilot.press("enter")
        await wait_for_load(pilot)
        run_screen = app.screen
        run_rows = table_rows(run_screen.query_one(RunTable))
        await pilot.press("enter")
        await wait_for_load(pilot)
        opened = app.screen
        await pilot.press("escape")
        await pilot.pause()
        back_to_run = app.screen
        await pilot.press("escape")
        await pilot.pause()
        back_to_picker = app.screen

    assert [row[5] for row in rows] == [UNSHARDED_PATH.name, folder.path.name]
    assert rows[1][1] == RUN_FOLDER_KIND
    assert DANGLING_NOTE in picker_details
    assert f"{SHARDED_PATH.name}: {SHARDED_PROBLEMS[0]}" in picker_details
    assert isinstance(run_screen, RunFolderScreen)
    assert [row[5] for row in run_rows] == [entry.path.name for entry in folder.checkpoints]
    assert isinstance(opened, InspectScreen)
    assert opened.checkpoint.path == folder.checkpoints[0].path
    assert back_to_run is run_screen
    assert back_to_picker is picker


async def test_demo_style_targets_with_run_folder(sample_factory, tmp_path: Path) -> None:
    sample = sample_factory("olmo1-unsharded")
    run = tmp_path / "run"
    for step in ("step2", "step3"):
        shutil.copytree(sample.path, run / step)
    (run / "latest").symlink_to("step3")
    (run / "latest-unsharded").symlink_to("step9-unsharded")

    app = InspectApp([sample.path, run])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        rows = table_rows(app.screen.query_one(RunTable))
        await pilot.press("down", "enter")
        await wait_for_load(pilot)
        run_screen = app.screen
        heading = static_text(run_screen.query_one("#run-heading", Static))

    loaded = app._loaded[run].result
    assert isinstance(loaded, RunFolder)
    assert rows[1][1] == RUN_FOLDER_KIND
    assert isinstance(run_screen, RunFolderScreen)
    assert sorted(Path(entry.path).name for entry in run_screen.entries) == ["step2", "step3"]
    for note in loaded.notes:
        assert note in heading
    assert any("latest-unsharded" in note for note in loaded.notes)
