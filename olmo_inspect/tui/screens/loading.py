"""The loading screen shown while a checkpoint's metadata is read in a worker thread."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, LoadingIndicator, Static

from olmo_inspect.tui.text import safe_text


class LoadingScreen(Screen[None]):
    """A loading indicator and the path being read; the app replaces it with the result."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Cancel")]

    def __init__(self, description: str | Path, *, can_go_back: bool = False) -> None:
        super().__init__()
        self.description = str(description)
        self.can_go_back = can_go_back

    def compose(self) -> ComposeResult:
        """Yield what is being read, the indicator and the footer."""
        message = Text("Reading metadata of ")
        message.append(safe_text(self.description), style="bold")
        message.append(" …")
        yield Static(message, id="loading-message")
        yield LoadingIndicator()
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer cancel only when there is a screen to go back to."""
        if action == "back":
            return self.can_go_back
        return True

    def action_back(self) -> None:
        """Return to the previous screen; the app drops the result when it arrives."""
        self.dismiss()
