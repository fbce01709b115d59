"""A Rich renderable that fits a table to its width by shortening one column of file paths.

Rich wraps or cuts a narrow column at its end, which breaks ``model/rank0.pt`` mid-word or hides
the rank number at the end of the name. ``FittedTable`` instead rebuilds the table with the
paths shortened from the left (``…/__0_0.distcp``), so the distinctive end of each path stays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table

# Narrowest path column when the file names themselves are short.
MIN_PATH_WIDTH = 8

ELLIPSIS = "…"

# Width offered to a table to measure its natural width, wider than any terminal.
UNBOUNDED_WIDTH = 100_000

# Builds the table with every path shortened to at most the given width; None keeps them whole.
TableBuilder = Callable[[int | None], Table]


def shorten_path(path: str, width: int | None) -> str:
    """Cut ``path`` to ``width`` characters from the left, marking the cut with an ellipsis."""
    if width is None or len(path) <= width:
        return path
    if width <= len(ELLIPSIS):
        return path[-width:] if width > 0 else ""
    return ELLIPSIS + path[len(path) - width + len(ELLIPSIS) :]


class FittedTable:
    """Render the table from ``build``, shortening its paths when it is wider than the space.

    Paths are never cut shorter than an ellipsis plus the longest file name (the part after
    the last ``/``), so ``…__1_0.distcp`` still names the rank; the table's other columns fold
    when that is not narrow enough.

    Args:
        build: Returns the table with paths cut to the width it is given (None: whole).
        paths: Every path in the path column.
    """

    def __init__(self, build: TableBuilder, paths: Iterable[str]) -> None:
        self.build = build
        paths = list(paths)
        self.longest_path = max((len(path) for path in paths), default=0)
        longest_name = max((len(path.rsplit("/", 1)[-1]) for path in paths), default=0)
        self.min_width = min(self.longest_path, max(MIN_PATH_WIDTH, longest_name + len(ELLIPSIS)))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.build(None)
        natural = Measurement.get(console, options.update_width(UNBOUNDED_WIDTH), table).maximum
        excess = natural - options.max_width
        if excess > 0:
            width = max(self.min_width, self.longest_path - excess)
            table = self.build(width)
        yield table

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.build(None))
