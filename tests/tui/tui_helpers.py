"""Helpers for the TUI tests: a loader over hand-built records, waiting for loads, rendering."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from olmo_inspect.errors import CheckpointNotFound, InspectError
from olmo_inspect.model import Checkpoint, RunFolder

Record = Checkpoint | RunFolder | InspectError


def records_loader(
    records: Mapping[Path, Record],
) -> Callable[[Path, bool], Checkpoint | RunFolder]:
    """Return a loader that serves ``records`` by path and raises the errors among them."""

    def load(path: Path, deep: bool) -> Checkpoint | RunFolder:
        record = records.get(Path(path))
        if record is None:
            raise CheckpointNotFound(f"{path}: no such checkpoint in the test records")
        if isinstance(record, InspectError):
            raise record
        return record

    return load


async def wait_for_load(pilot: Pilot[int]) -> None:
    """Wait until every load worker has finished and its result is on screen."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def static_text(widget: Static, width: int = 200) -> str:
    """Render what ``widget`` shows to plain text, as a terminal ``width`` columns wide would."""
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def table_rows(table: DataTable[object]) -> list[list[str]]:
    """Return the plain text of every cell of ``table``, row by row."""
    rows = []
    for index in range(table.row_count):
        rows.append([getattr(cell, "plain", str(cell)) for cell in table.get_row_at(index)])
    return rows
