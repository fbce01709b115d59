"""The filter box above the tensor tree."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input

from olmo_inspect.tui.messages import FilterClosed

# Short enough for the tree column of an 80-column terminal.
PLACEHOLDER = "/ filter: name, *glob, a|b"


class FilterInput(Input):
    """A one-line input whose text filters the tensor tree.

    The text is a substring, a glob pattern over dotted name parts (``*norm``,
    ``blocks.1?.*``) or alternatives of those separated by ``|``, ignoring case. Escape clears
    it and posts ``FilterClosed`` so that the screen hands the focus back to the tree; enter
    submits it, keeping the text.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear_filter", "Clear filter")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder=PLACEHOLDER, id=id)

    def action_clear_filter(self) -> None:
        """Empty the input and ask the screen to move the focus back to the tree."""
        self.value = ""
        self.post_message(FilterClosed())
