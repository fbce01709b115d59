"""The run table: checkpoints of a training run folder (or the targets given), one per row."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

from rich.text import Text
from textual.widgets import DataTable

from olmo_inspect.model import RunEntry
from olmo_inspect.tui.messages import OpenPath
from olmo_inspect.tui.text import format_bytes, format_count, safe


def _complete_cell(entry: RunEntry) -> Text:
    if entry.complete:
        return Text("✔ complete", style="green")
    count = len(entry.problems)
    if count == 0:
        return Text("✘ incomplete", style="red")
    noun = "problem" if count == 1 else "problems"
    return Text(f"✘ {count} {noun}", style="red")


RUN_FOLDER_KIND = "run folder"


class RunTable(DataTable[Text]):
    """Step, kind, size, completeness and ``latest`` mark of each checkpoint; enter opens one.

    Entries whose path is in ``run_folders`` show "run folder" as their kind.
    """

    def __init__(
        self,
        entries: Sequence[RunEntry],
        *,
        run_folders: Collection[Path] = (),
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.entries = list(entries)
        self.run_folders = set(run_folders)

    def _kind_cell(self, entry: RunEntry) -> Text:
        if entry.path in self.run_folders:
            return Text(RUN_FOLDER_KIND, style="bold")
        return safe(None if entry.kind is None else str(entry.kind))

    def on_mount(self) -> None:
        """Fill the table."""
        self.add_column("step", key="step")
        self.add_column("kind", key="kind")
        self.add_column("size", key="size")
        self.add_column("status", key="status")
        self.add_column("latest", key="latest")
        self.add_column("checkpoint", key="path")

        # Show paths below the entries' common folder, so long shared prefixes do not push the
        # part that distinguishes entries out of view.
        paths = [str(entry.path) for entry in self.entries]
        common = os.path.commonpath(paths) if len(paths) > 1 else None
        for index, entry in enumerate(self.entries):
            shown = os.path.relpath(entry.path, common) if common else "."
            if shown == ".":
                shown = entry.path.name
            self.add_row(
                Text(format_count(entry.step), justify="right"),
                self._kind_cell(entry),
                Text(format_bytes(entry.bytes), justify="right"),
                _complete_cell(entry),
                Text("latest", style="bold yellow") if entry.latest else Text(""),
                safe(shown),
                key=str(index),
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Post ``OpenPath`` for the chosen row."""
        event.stop()
        entry = self.entries[int(str(event.row_key.value))]
        self.post_message(OpenPath(entry.path))
