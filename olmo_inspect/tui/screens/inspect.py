"""The inspect screen: one checkpoint's header, tensor tree, details and the other tabs."""

from __future__ import annotations

import logging
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from olmo_inspect.errors import InspectError
from olmo_inspect.model import Checkpoint, Summary
from olmo_inspect.tui.export import export_json
from olmo_inspect.tui.messages import CheckpointShown, FilterClosed, TensorHighlighted
from olmo_inspect.tui.text import format_bytes, format_count, safe_text
from olmo_inspect.tui.widgets.checkpoint_header import CheckpointHeader
from olmo_inspect.tui.widgets.config_view import ConfigView
from olmo_inspect.tui.widgets.files_table import FilesTable
from olmo_inspect.tui.widgets.filter_input import FilterInput
from olmo_inspect.tui.widgets.problems_view import ProblemsView
from olmo_inspect.tui.widgets.rank_balance import RankBalance
from olmo_inspect.tui.widgets.shard_layout import ShardLayout
from olmo_inspect.tui.widgets.tensor_details import TensorDetails
from olmo_inspect.tui.widgets.tensor_tree import TensorTree
from olmo_inspect.tui.widgets.train_state_view import TrainStateView

log = logging.getLogger(__name__)

# Tab ids and titles, in display order. The shards tab exists only for sharded checkpoints.
TAB_TENSORS = "tensors"
TAB_CONFIG = "config"
TAB_TRAIN = "train-state"
TAB_FILES = "files"
TAB_SHARDS = "shards"
TAB_PROBLEMS = "problems"
TAB_TITLES = {
    TAB_TENSORS: "Tensors",
    TAB_CONFIG: "Config",
    TAB_TRAIN: "Trainer state",
    TAB_FILES: "Files",
    TAB_SHARDS: "Shards",
    TAB_PROBLEMS: "Problems",
}


# Below this many columns the details pane goes under the tree instead of beside it.
NARROW_WIDTH = 120
NARROW_CLASS = "-narrow"
WIDE_CLASS = "-wide"


def files_total(checkpoint: Checkpoint) -> str:
    """Describe the file list: count, missing files and bytes on disk."""
    missing = sum(info.missing for info in checkpoint.files)
    count = f"{len(checkpoint.files):,} files"
    if missing:
        count = f"{count} ({missing:,} missing)"
    nbytes = checkpoint.files_bytes
    return f"{count}, {format_bytes(nbytes)} ({format_count(nbytes)} bytes)"


def has_shards(checkpoint: Checkpoint) -> bool:
    """Return True when the checkpoint is of a sharded kind or lists any shard piece."""
    return checkpoint.kind.is_sharded or any(tensor.shards for tensor in checkpoint.tensors)


class InspectScreen(Screen[None]):
    """Everything known about one checkpoint, in tabs."""

    AUTO_FOCUS = "#tensor-tree"
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, NARROW_CLASS),
        (NARROW_WIDTH, WIDE_CLASS),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_filter", "Filter"),
        Binding("e", "export_json", "Export JSON"),
        Binding("c", "convert", "Convert"),
        Binding("escape", "back", "Back"),
        Binding("1", "show_tab('tensors')", "Tensors", show=False),
        Binding("2", "show_tab('config')", "Config", show=False),
        Binding("3", "show_tab('train-state')", "Trainer state", show=False),
        Binding("4", "show_tab('files')", "Files", show=False),
        Binding("5", "show_tab('shards')", "Shards", show=False),
        Binding("6", "show_tab('problems')", "Problems", show=False),
    ]

    def __init__(
        self, checkpoint: Checkpoint, summary: Summary | None, *, can_go_back: bool = False
    ) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.summary = summary
        self.can_go_back = can_go_back
        self.sharded = has_shards(checkpoint)

    def tab_ids(self) -> list[str]:
        """Return the ids of the tabs this screen shows, in order."""
        return [tab for tab in TAB_TITLES if tab != TAB_SHARDS or self.sharded]

    def compose(self) -> ComposeResult:
        """Yield the header, the tabs and the footer."""
        checkpoint = self.checkpoint
        optimizer_tensors = checkpoint.optimizer.tensors if checkpoint.optimizer else []

        yield CheckpointHeader(checkpoint, self.summary, id="checkpoint-header")
        with TabbedContent(initial=TAB_TENSORS, id="tabs"):
            with (
                TabPane(TAB_TITLES[TAB_TENSORS], id=TAB_TENSORS),
                Horizontal(id="tensor-panes"),
            ):
                with Vertical(id="tree-column"):
                    yield FilterInput(id="filter")
                    yield TensorTree(checkpoint.tensors, optimizer_tensors, id="tensor-tree")
                with VerticalScroll(id="details-column"):
                    yield TensorDetails(id="details")

            with TabPane(TAB_TITLES[TAB_CONFIG], id=TAB_CONFIG):
                yield ConfigView(checkpoint, self.summary, id="config-view")

            with TabPane(TAB_TITLES[TAB_TRAIN], id=TAB_TRAIN), VerticalScroll():
                yield TrainStateView(checkpoint, id="train-state-view")

            with TabPane(TAB_TITLES[TAB_FILES], id=TAB_FILES), Vertical():
                yield Static(files_total(checkpoint), markup=False, id="files-total")
                yield FilesTable(checkpoint.files, id="files-table")

            if self.sharded:
                with TabPane(TAB_TITLES[TAB_SHARDS], id=TAB_SHARDS), VerticalScroll():
                    yield ShardLayout(id="shard-layout")
                    yield RankBalance(checkpoint, id="rank-balance")

            problems_title = TAB_TITLES[TAB_PROBLEMS]
            if checkpoint.problems:
                problems_title = f"{problems_title} ({len(checkpoint.problems)})"
            with TabPane(problems_title, id=TAB_PROBLEMS), VerticalScroll():
                yield ProblemsView(checkpoint, id="problems-view")
        yield Footer()

    def on_mount(self) -> None:
        """Focus the tree, show the first tensor's details and announce the screen."""
        tree = self.query_one(TensorTree)
        tree.focus()
        tree.move_cursor_to_first_tensor()
        self.call_after_refresh(self._announce_shown)

    def _announce_shown(self) -> None:
        self.app.post_message(CheckpointShown(self.checkpoint.path))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide actions that do not apply: back at the top level, the shards tab when unsharded."""
        if action == "back" and not self.can_go_back:
            # At the top level escape only clears the filter, so it is offered while there is one.
            return bool(self._filter_text())
        if action == "show_tab" and parameters:
            return parameters[0] in self.tab_ids()
        return True

    def _filter_text(self) -> str:
        return self.query_one(FilterInput).value

    @on(TensorHighlighted)
    def show_tensor(self, event: TensorHighlighted) -> None:
        """Show the highlighted tensor in the details pane and the shard layout view."""
        self.query_one(TensorDetails).show(event.tensor, event.indices)
        if self.sharded:
            self.query_one(ShardLayout).show(event.tensor)

    @on(Input.Changed, "#filter")
    def filter_tree(self, event: Input.Changed) -> None:
        """Rebuild the tree from the tensors whose names pass the filter."""
        self.query_one(TensorTree).apply_filter(event.value)
        self.refresh_bindings()

    @on(Input.Submitted, "#filter")
    @on(FilterClosed)
    def focus_tree(self) -> None:
        """Move from the filter to the tree on enter (text kept) or escape (text cleared)."""
        self.query_one(TensorTree).focus()

    def action_focus_filter(self) -> None:
        """Show the tensors tab and put the cursor in the filter."""
        self.query_one(TabbedContent).active = TAB_TENSORS
        self.query_one(FilterInput).focus()

    def action_show_tab(self, tab: str) -> None:
        """Switch to the tab with id ``tab`` and focus its first focusable widget."""
        if tab not in self.tab_ids():
            return

        self.query_one(TabbedContent).active = tab
        # Without this, the focus stays on a widget of the hidden tab; Textual then moves it
        # to the first focusable widget, and TabbedContent switches back to that widget's tab.
        # The tensors tab focuses its tree, not the filter above it, so that keys such as the
        # tab digits and q keep working.
        if tab == TAB_TENSORS:
            self.query_one(TensorTree).focus()
            return
        pane = self.query_one(f"#{tab}", TabPane)
        for widget in pane.query("*"):
            if widget.focusable:
                widget.focus()
                return
        self.set_focus(None)

    def action_back(self) -> None:
        """Clear the filter when there is one, otherwise return to the previous screen."""
        filter_input = self.query_one(FilterInput)
        if filter_input.value:
            filter_input.value = ""
            self.query_one(TensorTree).focus()
            return
        if self.can_go_back:
            self.dismiss()

    def action_convert(self) -> None:
        """Open the conversion wizard for this checkpoint."""
        from olmo_inspect.tui.screens.convert import ConvertScreen

        self.app.push_screen(ConvertScreen(self.checkpoint))

    def action_export_json(self) -> None:
        """Write the checkpoint's JSON report to a new file in the current directory."""
        try:
            written = export_json(self.checkpoint)
        except (InspectError, OSError) as error:
            log.warning("JSON export of %s failed: %s", self.checkpoint.path, error)
            self.notify(
                safe_text(str(error)), title="Export failed", severity="error", markup=False
            )
            return

        self.notify(f"Wrote {safe_text(str(written))}", title="Export JSON", markup=False)
