"""The header lines of the inspect screen: kind, path, step, size and the verdict."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from olmo_inspect.model import Checkpoint, Summary
from olmo_inspect.tui.text import format_bytes, format_count, join_styled, safe_text

SEPARATOR = "  ·  "


def header_text(checkpoint: Checkpoint, summary: Summary | None) -> Text:
    """Build the two header lines for ``checkpoint``.

    Parameters come from ``summary`` when there is one, else from the tensor shapes. The size
    is the bytes of the files on disk when the reader listed them, else the model tensor bytes.
    """
    if summary is not None:
        parameters = summary.parameters
    else:
        parameters = sum(tensor.numel for tensor in checkpoint.tensors)
    size = checkpoint.files_bytes or checkpoint.nbytes

    text = join_styled(
        (f" {checkpoint.kind} ", "bold reverse"), (safe_text(str(checkpoint.path)), "bold")
    )
    text.append("\n")

    step = "-" if checkpoint.step is None else format_count(checkpoint.step)
    text.append(f"step {step}{SEPARATOR}{format_count(parameters)} parameters{SEPARATOR}")
    text.append(f"{format_bytes(size)}{SEPARATOR}")
    if checkpoint.world_size is not None:
        text.append(f"world size {checkpoint.world_size}{SEPARATOR}")

    text.append_text(verdict_text(checkpoint))
    return text


def verdict_text(checkpoint: Checkpoint) -> Text:
    """Build the complete/incomplete verdict: green when complete, red with the problem count."""
    if checkpoint.complete:
        return Text("✔ complete", style="bold green")

    count = len(checkpoint.problems)
    if count == 0:
        return Text("✘ incomplete: no tensors found", style="bold red")

    noun = "problem" if count == 1 else "problems"
    return Text(f"✘ incomplete: {count} {noun}", style="bold red")


class CheckpointHeader(Static):
    """Kind, path, step, parameter count, size and verdict of one checkpoint."""

    def __init__(
        self, checkpoint: Checkpoint, summary: Summary | None, *, id: str | None = None
    ) -> None:
        super().__init__(header_text(checkpoint, summary), id=id)
