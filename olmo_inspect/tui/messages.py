"""Messages the inspector's widgets post to their screens."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from olmo_inspect.model import TensorInfo


class TensorHighlighted(Message):
    """The cursor of the tensor tree moved onto a tensor.

    ``indices`` lists the block indices the tensor stands for when it sits under a folded
    node (``blocks.[0-15]``); it is None otherwise.
    """

    def __init__(self, tensor: TensorInfo, indices: list[int] | None) -> None:
        super().__init__()
        self.tensor = tensor
        self.indices = indices


class OpenPath(Message):
    """The user chose a checkpoint to open from a run folder or the target picker."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path


class FilterClosed(Message):
    """The user left the tensor filter with escape; the screen moves the focus to the tree."""


class CheckpointShown(Message):
    """The inspect screen has mounted and drawn one checkpoint's tensor tree.

    Posted to the app once per screen, after the first refresh; the open-time benchmark waits
    for it.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
