"""The problems tab: the verdict, problems in red, detection evidence and notes."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.widgets import Static

from olmo_inspect.model import Checkpoint
from olmo_inspect.tui.text import safe_text
from olmo_inspect.tui.widgets.checkpoint_header import verdict_text


def _bullets(items: list[str], style: str = "") -> Text:
    text = Text()
    for item in items:
        text.append(f"  • {safe_text(item)}\n", style=style)
    return text


def problems_renderable(checkpoint: Checkpoint) -> RenderableType:
    """Build the verdict, the problems, why the kind was chosen and the reader's notes."""
    parts: list[RenderableType] = [verdict_text(checkpoint), Text("")]

    parts.append(Text("Problems", style="bold underline"))
    if checkpoint.problems:
        parts.append(_bullets(checkpoint.problems, style="red"))
    else:
        parts.append(Text("  No problems found.\n", style="green"))

    parts.append(Text(f"Why this is {checkpoint.kind}", style="bold underline"))
    if checkpoint.evidence:
        parts.append(_bullets(checkpoint.evidence))
    else:
        parts.append(Text("  The reader recorded no evidence.\n", style="dim"))

    if checkpoint.notes:
        parts.append(Text("Notes", style="bold underline"))
        parts.append(_bullets(checkpoint.notes, style="yellow"))
    return Group(*parts)


class ProblemsView(Static):
    """Verdict, problems, detection evidence and notes of one checkpoint."""

    def __init__(self, checkpoint: Checkpoint, *, id: str | None = None) -> None:
        super().__init__(problems_renderable(checkpoint), id=id)
