"""The run folder screen: the checkpoints of a training run, or the targets given to the app."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from olmo_inspect.model import RunEntry
from olmo_inspect.tui.messages import OpenPath
from olmo_inspect.tui.text import safe_text
from olmo_inspect.tui.widgets.run_table import RunTable

NOTES_STYLE = "yellow"


def entry_details(entry: RunEntry, *, run_folder: bool = False) -> Text:
    """Describe one row: its path, then every problem in red or that it is complete."""
    text = Text(safe_text(str(entry.path)), style="bold")
    if run_folder:
        text.append("  run folder", style="dim")
    text.append("\n")

    if not entry.problems:
        if entry.complete:
            text.append("✔ complete, no problems found", style="green")
        else:
            text.append("✘ incomplete; open it to see why", style="red")
        return text

    for problem in entry.problems:
        text.append(f"• {safe_text(problem)}\n", style="red")
    text.rstrip()
    return text


class RunFolderScreen(Screen[None]):
    """A table of checkpoints with the highlighted row's problems; enter opens the row.

    The table posts ``OpenPath``, which the app handles by loading that checkpoint or run
    folder.

    Args:
        title: The heading: the run folder's path, or a name for the targets given.
        entries: One row per checkpoint.
        can_go_back: Whether escape returns to a previous screen.
        notes: Remarks about the folder itself, such as a dangling ``latest`` link.
        run_folders: Paths of the entries that are run folders rather than checkpoints.
    """

    AUTO_FOCUS = "#run-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=True),
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self,
        title: str,
        entries: Sequence[RunEntry],
        *,
        can_go_back: bool = False,
        notes: Sequence[str] = (),
        run_folders: Collection[Path] = (),
    ) -> None:
        super().__init__()
        self.heading = title
        self.entries = list(entries)
        self.can_go_back = can_go_back
        self.notes = list(notes)
        self.run_folders = set(run_folders)

    def compose(self) -> ComposeResult:
        """Yield the heading with the folder's notes, the table, the row details and the footer."""
        count = len(self.entries)
        noun = "entry" if self.run_folders else "checkpoint"
        if count != 1:
            noun = "entries" if self.run_folders else "checkpoints"
        heading = Text(safe_text(self.heading), style="bold")
        heading.append(f"\n{count} {noun}; press enter to open one.", style="dim")
        for note in self.notes:
            heading.append(f"\n⚠ {safe_text(note)}", style=NOTES_STYLE)
        yield Static(heading, id="run-heading")
        yield RunTable(self.entries, run_folders=self.run_folders, id="run-table")
        with VerticalScroll(id="run-details-scroll"):
            yield Static(id="run-details")
        yield Footer()

    def on_mount(self) -> None:
        """Show the details of the first row."""
        self.show_details(0)

    def show_details(self, index: int) -> None:
        """Show the path and problems of the entry in row ``index``."""
        details = self.query_one("#run-details", Static)
        if not 0 <= index < len(self.entries):
            details.update(Text("No checkpoints found in this folder.", style="dim"))
            return
        entry = self.entries[index]
        details.update(entry_details(entry, run_folder=entry.path in self.run_folders))

    @on(DataTable.RowHighlighted, "#run-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_details(event.cursor_row)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer back only when there is a screen to go back to."""
        if action == "back":
            return self.can_go_back
        return True

    def action_open(self) -> None:
        """Open the checkpoint under the cursor."""
        self.query_one(RunTable).action_select_cursor()

    def open_entry(self, index: int) -> None:
        """Open the checkpoint in row ``index``."""
        self.post_message(OpenPath(self.entries[index].path))

    def action_back(self) -> None:
        """Return to the previous screen."""
        self.dismiss()
