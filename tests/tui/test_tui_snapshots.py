"""Snapshot tests of the inspector's screens on hand-built records with fixed paths.

Regenerate the SVGs after an intended change with ``pytest tests/tui --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot
from tui_helpers import records_loader, wait_for_load
from tui_records import (
    SHARDED_PATH,
    UNSHARDED_PATH,
    run_folder,
    sharded_checkpoint,
    unsharded_checkpoint,
)

from olmo_inspect.tui import InspectApp

SIZE = (140, 40)
SMALL = (80, 24)


def _app(path: Path, records: dict) -> InspectApp:
    return InspectApp([path], loader=records_loader(records))


def test_snapshot_tensors_tab(snap_compare) -> None:
    app = _app(UNSHARDED_PATH, {UNSHARDED_PATH: unsharded_checkpoint()})

    assert snap_compare(app, terminal_size=SIZE, run_before=wait_for_load)


def test_snapshot_shards_missing_rank(snap_compare) -> None:
    app = _app(SHARDED_PATH, {SHARDED_PATH: sharded_checkpoint(world_size=2, missing_rank=1)})

    async def show_shards(pilot: Pilot[int]) -> None:
        await wait_for_load(pilot)
        await pilot.press("5")

    assert snap_compare(app, terminal_size=SIZE, run_before=show_shards)


def test_snapshot_config_tab(snap_compare) -> None:
    app = _app(UNSHARDED_PATH, {UNSHARDED_PATH: unsharded_checkpoint()})

    async def show_config(pilot: Pilot[int]) -> None:
        await wait_for_load(pilot)
        await pilot.press("2")

    assert snap_compare(app, terminal_size=SIZE, run_before=show_config)


def test_snapshot_run_folder(snap_compare) -> None:
    folder = run_folder()

    app = _app(folder.path, {folder.path: folder})

    assert snap_compare(app, terminal_size=SIZE, run_before=wait_for_load)


def test_snapshot_convert_targets(snap_compare) -> None:
    app = _app(UNSHARDED_PATH, {UNSHARDED_PATH: unsharded_checkpoint()})

    async def open_wizard(pilot: Pilot[int]) -> None:
        await wait_for_load(pilot)
        await pilot.press("c")

    assert snap_compare(app, terminal_size=SIZE, run_before=open_wizard)


def test_snapshot_small_terminal(snap_compare) -> None:
    app = _app(SHARDED_PATH, {SHARDED_PATH: sharded_checkpoint(world_size=2, missing_rank=1)})

    assert snap_compare(app, terminal_size=SMALL, run_before=wait_for_load)
