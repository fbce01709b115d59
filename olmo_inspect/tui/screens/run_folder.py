"""The run folder screen: the checkpoints of a training run, or the targets given to the app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from olmo_inspect.model import RunEntry
from olmo_inspect.tui.messages import OpenPath
from olmo_inspect.tui.text import safe_text
from olmo_inspect.tui.widgets.run_table import RunTable


class RunFolderScreen(Screen[None]):
    """A table of checkpoints; enter opens the one under the cursor.

    The table posts ``OpenPath``, which the app handles by loading that checkpoint.
    """

    AUTO_FOCUS = "#run-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=True),
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self, title: str, entries: Sequence[RunEntry], *, can_go_back: bool = False
    ) -> None:
        super().__init__()
        self.heading = title
        self.entries = list(entries)
        self.can_go_back = can_go_back

    def compose(self) -> ComposeResult:
        """Yield the heading, the table and the footer."""
        count = len(self.entries)
        noun = "checkpoint" if count == 1 else "checkpoints"
        heading = Text(safe_text(self.heading), style="bold")
        heading.append(f"\n{count} {noun}; press enter to open one.", style="dim")
        yield Static(heading, id="run-heading")
        yield RunTable(self.entries, id="run-table")
        yield Footer()

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
