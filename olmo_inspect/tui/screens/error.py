"""The error screen: why a checkpoint could not be opened, and what to do."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from olmo_inspect.tui.text import safe_text


class ErrorScreen(Screen[None]):
    """The loader's error message for one path, shown in place of the inspect screen."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, path: Path, message: str, *, can_go_back: bool = False) -> None:
        super().__init__()
        self.path = path
        self.message = message
        self.can_go_back = can_go_back

    def compose(self) -> ComposeResult:
        """Yield the title, the message and the footer."""
        title = Text("Cannot open ", style="bold red")
        title.append(safe_text(str(self.path)), style="bold red")

        hint = "Press escape to go back or q to quit." if self.can_go_back else "Press q to quit."
        with Vertical(id="error-box"):
            yield Static(title, id="error-title")
            yield Static(Text(safe_text(self.message, multiline=True)), id="error-message")
            yield Static(Text(hint, style="dim"), id="error-hint")
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer back only when there is a screen to go back to."""
        if action == "back":
            return self.can_go_back
        return True

    def action_back(self) -> None:
        """Return to the previous screen."""
        self.dismiss()
