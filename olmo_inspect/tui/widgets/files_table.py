"""The files table: every file of the checkpoint with its role, rank, size and tensor count."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from olmo_inspect.model import FileInfo
from olmo_inspect.tui.text import format_bytes, format_count, safe

MISSING_STYLE = "bold red"


class FilesTable(DataTable[Text]):
    """Path, role, rank, size and tensor count of each file, in the reader's order.

    Files the metadata names but the folder lacks show their path in red and "missing" as size.
    """

    def __init__(self, files: Sequence[FileInfo], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._files = list(files)

    def on_mount(self) -> None:
        """Fill the table."""
        self.add_column("path", key="path")
        self.add_column("role", key="role")
        self.add_column("rank", key="rank")
        self.add_column("size", key="size")
        self.add_column("tensors", key="tensors")

        for info in self._files:
            if info.missing:
                size = Text("missing", style=MISSING_STYLE, justify="right")
                path = safe(info.path, style=MISSING_STYLE)
            else:
                size = Text(format_bytes(info.bytes), justify="right")
                path = safe(info.path)
            self.add_row(
                path,
                safe(info.role),
                safe(info.rank),
                size,
                Text(format_count(info.tensors), justify="right"),
            )
