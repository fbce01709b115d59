"""Command palette entries, named ``area: Action`` and offered only on screens they apply to."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

from textual.app import SystemCommand
from textual.screen import Screen

from olmo_inspect.tui.screens.inspect import TAB_TITLES, InspectScreen
from olmo_inspect.tui.screens.run_folder import RunFolderScreen

if TYPE_CHECKING:
    from textual.app import App


def inspect_commands(screen: InspectScreen) -> Iterator[SystemCommand]:
    """Yield the entries of the inspect screen: tabs, filter, export and convert."""
    for tab in screen.tab_ids():
        title = TAB_TITLES[tab]
        yield SystemCommand(
            f"view: {title}", f"Show the {title} tab", partial(screen.action_show_tab, tab)
        )

    yield SystemCommand(
        "tensors: Filter",
        "Filter the tensor tree by name: text, globs such as *norm, alternatives with |",
        screen.action_focus_filter,
    )
    yield SystemCommand(
        "export: JSON",
        "Write this checkpoint's JSON report to a new file in the current directory",
        screen.action_export_json,
    )
    if screen.can_go_back:
        yield SystemCommand("view: Back", "Return to the list of checkpoints", screen.action_back)

    yield SystemCommand(
        "convert: Start", "Convert this checkpoint to another kind", screen.action_convert
    )


def run_folder_commands(screen: RunFolderScreen) -> Iterator[SystemCommand]:
    """Yield the entries of the run folder screen: open the selected or the latest checkpoint."""
    yield SystemCommand(
        "run: Open selected", "Open the checkpoint under the cursor", screen.action_open
    )

    latest = [index for index, entry in enumerate(screen.entries) if entry.latest]
    if latest:
        yield SystemCommand(
            "run: Open latest",
            "Open the checkpoint the run marks as latest",
            partial(screen.open_entry, latest[0]),
        )
    if screen.can_go_back:
        yield SystemCommand("view: Back", "Return to the previous screen", screen.action_back)


def app_commands(app: App[int], screen: Screen[object]) -> Iterator[SystemCommand]:
    """Yield the entries offered on every screen: theme, keys, maximize and quit."""
    yield SystemCommand("theme: Change theme", "Pick a colour theme", app.action_change_theme)

    if screen.query("HelpPanel"):
        yield SystemCommand("app: Hide keys", "Hide the keys panel", app.action_hide_help_panel)
    else:
        yield SystemCommand(
            "app: Show keys", "Show the keys of the focused widget", app.action_show_help_panel
        )

    if screen.maximized is not None:
        yield SystemCommand(
            "view: Minimize", "Restore the maximized widget", screen.action_minimize
        )
    elif screen.focused is not None and screen.focused.allow_maximize:
        yield SystemCommand("view: Maximize", "Maximize the focused widget", screen.action_maximize)

    yield SystemCommand("app: Quit", "Quit olmo-inspect", app.action_quit)


def commands_for(app: App[int], screen: Screen[object]) -> Iterator[SystemCommand]:
    """Yield every palette entry that applies to ``screen``."""
    if isinstance(screen, InspectScreen):
        yield from inspect_commands(screen)
    if isinstance(screen, RunFolderScreen):
        yield from run_folder_commands(screen)
    yield from app_commands(app, screen)
