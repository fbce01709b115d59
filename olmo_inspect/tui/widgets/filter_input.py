"""The filter box above the tensor tree."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input


class FilterInput(Input):
    """A one-line input whose text filters the tensor tree; escape clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear_filter", "Clear filter")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="Filter tensors by name (press / to focus)", id=id)

    def action_clear_filter(self) -> None:
        """Empty the input and hand the focus back to the screen's next widget."""
        self.value = ""
        self.screen.focus_next()
