"""The Textual app of ``olmo-inspect PATH``: loads checkpoints in a worker and shows them.

The app renders records from the library and never parses files itself. Loading runs in a
thread worker behind a loading screen; a loader error (``InspectError`` or ``OSError``) becomes
an error screen. Several targets start on a picker that lists them, as ``olmo-inspect demo``
needs; a run folder among them opens the run folder screen. While the app runs, log records go
to Textual's log instead of the terminal. Importing this module never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from olmo_inspect.errors import EXIT_OK, InspectError
from olmo_inspect.model import Checkpoint, RunEntry, RunFolder, Summary
from olmo_inspect.tui.commands import commands_for
from olmo_inspect.tui.logs import logs_routed_to_app
from olmo_inspect.tui.messages import OpenPath
from olmo_inspect.tui.screens.error import ErrorScreen
from olmo_inspect.tui.screens.inspect import InspectScreen
from olmo_inspect.tui.screens.loading import LoadingScreen
from olmo_inspect.tui.screens.run_folder import RunFolderScreen

log = logging.getLogger(__name__)

Loader = Callable[[Path, bool], "Checkpoint | RunFolder"]
Summarizer = Callable[[Checkpoint], "Summary | None"]

PICKER_TITLE = "Checkpoints"


def load_with_library(path: Path, deep: bool) -> Checkpoint | RunFolder:
    """Open ``path`` with the library's loader (imported here, so the app starts fast)."""
    from olmo_inspect.inspect import open_path

    return open_path(path, deep=deep)


def summarize_with_library(checkpoint: Checkpoint) -> Summary | None:
    """Summarize ``checkpoint`` with the library's summarizer."""
    from olmo_inspect.summary import summarize

    return summarize(checkpoint)


@dataclass
class Loaded:
    """Result of loading one path: a checkpoint with its summary, a run folder or an error."""

    path: Path
    result: Checkpoint | RunFolder | None = None
    summary: Summary | None = None
    error: InspectError | OSError | None = None

    @property
    def message(self) -> str:
        """Return the error as one line, naming the path when an ``OSError`` does not."""
        if isinstance(self.error, OSError) and not isinstance(self.error, InspectError):
            reason = self.error.strerror or str(self.error)
            return f"{self.error.filename or self.path}: {reason}"
        return str(self.error)

    @property
    def exit_code(self) -> int:
        if isinstance(self.error, InspectError):
            return self.error.exit_code
        return InspectError.exit_code

    def entry(self) -> RunEntry:
        """Describe this result as one row of the target picker."""
        result = self.result
        if isinstance(result, Checkpoint):
            return RunEntry(
                path=self.path,
                step=result.step,
                kind=result.kind,
                bytes=result.files_bytes or result.nbytes,
                complete=result.complete,
                latest=False,
                problems=list(result.problems),
            )
        if isinstance(result, RunFolder):
            problems = [
                f"{entry.path.name}: {problem}"
                for entry in result.checkpoints
                for problem in entry.problems
            ]
            return RunEntry(
                path=self.path,
                step=None,
                kind=None,
                bytes=sum(entry.bytes for entry in result.checkpoints),
                complete=all(entry.complete for entry in result.checkpoints),
                latest=False,
                problems=problems + list(result.notes),
            )
        return RunEntry(
            path=self.path,
            step=None,
            kind=None,
            bytes=0,
            complete=False,
            latest=False,
            problems=[self.message],
        )


class InspectApp(App[int]):
    """Browse one or more checkpoints: tensors, config, trainer state, files, shards, problems.

    Args:
        targets: Checkpoint directories, files or run folders. One opens directly; several
            start on a picker.
        deep: Ask the loader to read every rank file, not only rank 0.
        loader: Opens one path; defaults to ``olmo_inspect.inspect.open_path``.
        summarizer: Summarizes one checkpoint; defaults to ``olmo_inspect.summary.summarize``.
    """

    CSS_PATH = "app.tcss"
    TITLE = "olmo-inspect"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("q", "quit", "Quit")]

    def __init__(
        self,
        targets: Sequence[Path],
        *,
        deep: bool = False,
        loader: Loader | None = None,
        summarizer: Summarizer | None = None,
    ) -> None:
        super().__init__()
        if not targets:
            raise ValueError("InspectApp needs at least one path to open")
        self.targets = [Path(target) for target in targets]
        self.deep = deep
        self._loader = loader or load_with_library
        self._summarizer = summarizer or summarize_with_library
        self._loaded: dict[Path, Loaded] = {}
        self._exit_code = EXIT_OK
        self._log_routing = ExitStack()

    def on_load(self) -> None:
        """Send log records to Textual's log, off the terminal, until the app unmounts."""
        self._log_routing.enter_context(logs_routed_to_app(self))

    def on_unmount(self) -> None:
        """Give the logging handlers back to the terminal."""
        self._log_routing.close()

    def on_mount(self) -> None:
        """Start loading the single target, or all targets for the picker."""
        if len(self.targets) == 1:
            self.open_path(self.targets[0], can_go_back=False)
            return

        loading = LoadingScreen(f"{len(self.targets)} checkpoints")
        self.push_screen(loading)
        self.run_worker(
            partial(self._load_targets, loading), thread=True, group="load", exclusive=True
        )

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Yield the palette entries that apply to ``screen``."""
        yield from commands_for(self, screen)

    async def action_quit(self) -> None:
        """Quit; the exit code is non-zero when the only target could not be opened."""
        self.exit(return_code=self._exit_code)

    def open_path(self, path: Path, *, can_go_back: bool) -> None:
        """Show ``path``: from the cache at once, or behind a loading screen while it loads."""
        if path in self._loaded:
            self.push_screen(self._screen_for(self._loaded[path], can_go_back=can_go_back))
            return

        loading = LoadingScreen(path, can_go_back=can_go_back)
        self.push_screen(loading)
        self.run_worker(
            partial(self._load_one, path, loading), thread=True, group="load", exclusive=True
        )

    @on(OpenPath)
    def open_chosen_path(self, message: OpenPath) -> None:
        """Open a checkpoint chosen in a run folder or the picker."""
        self.open_path(message.path, can_go_back=True)

    def _load(self, path: Path) -> Loaded:
        """Run the loader and the summarizer on ``path``; runs in a worker thread."""
        log.info("loading %s", path)
        try:
            result = self._loader(path, self.deep)
            summary = self._summarizer(result) if isinstance(result, Checkpoint) else None
        except (InspectError, OSError) as error:
            log.warning("cannot open %s: %s", path, error)
            return Loaded(path=path, error=error)
        return Loaded(path=path, result=result, summary=summary)

    def _load_one(self, path: Path, loading: LoadingScreen) -> None:
        loaded = self._load(path)
        self.call_from_thread(self._show_loaded, loaded, loading)

    def _load_targets(self, loading: LoadingScreen) -> None:
        results = [self._load(path) for path in self.targets]
        self.call_from_thread(self._show_picker, results, loading)

    def _show_loaded(self, loaded: Loaded, loading: LoadingScreen) -> None:
        """Replace the loading screen with the result, unless the user has left it."""
        self._loaded[loaded.path] = loaded
        if self.screen is not loading:
            return

        if loaded.error is not None and not loading.can_go_back:
            self._exit_code = loaded.exit_code
        self.switch_screen(self._screen_for(loaded, can_go_back=loading.can_go_back))

    def _show_picker(self, results: list[Loaded], loading: LoadingScreen) -> None:
        for loaded in results:
            self._loaded[loaded.path] = loaded
        if self.screen is not loading:
            return

        entries = [loaded.entry() for loaded in results]
        run_folders = {loaded.path for loaded in results if isinstance(loaded.result, RunFolder)}
        self.switch_screen(
            RunFolderScreen(PICKER_TITLE, entries, can_go_back=False, run_folders=run_folders)
        )

    def _screen_for(self, loaded: Loaded, *, can_go_back: bool) -> Screen[None]:
        result = loaded.result
        if isinstance(result, Checkpoint):
            return InspectScreen(result, loaded.summary, can_go_back=can_go_back)
        if isinstance(result, RunFolder):
            return RunFolderScreen(
                str(result.path), result.checkpoints, can_go_back=can_go_back, notes=result.notes
            )
        return ErrorScreen(loaded.path, loaded.message, can_go_back=can_go_back)


def run_inspector(
    targets: list[Path],
    *,
    deep: bool = False,
    loader: Loader | None = None,
    summarizer: Summarizer | None = None,
) -> int:
    """Run the inspector on ``targets`` until the user quits; return the exit code.

    The exit code is 0, or the error's exit code when a single target could not be opened.
    No log record reaches the terminal while the app runs (see ``logs_routed_to_app``).
    """
    app = InspectApp(targets, deep=deep, loader=loader, summarizer=summarizer)
    app.run()
    return app.return_code or EXIT_OK
