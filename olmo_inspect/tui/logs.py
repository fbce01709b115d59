"""Keep log records off the terminal while the TUI draws on it.

A ``logging.StreamHandler`` on stderr (``logging.basicConfig``, the CLI's ``--verbose``) or
Python's last-resort handler would print records over the screen. ``logs_routed_to_app`` moves
every such handler aside for as long as the app runs and sends the records to Textual's log
instead (visible with ``textual console``). User-facing failures are shown as notifications by
the screens, not through logging.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.app import App

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class AppLogHandler(logging.Handler):
    """Send log records to the Textual log of ``app``, from any thread.

    Textual's own ``TextualHandler`` finds the app through a context variable, which worker
    threads started with ``run_in_executor`` do not inherit, so it prints their records to
    stderr. This handler keeps a reference to the app instead.
    """

    def __init__(self, app: App[object]) -> None:
        super().__init__()
        self.app = app
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` to the app's log."""
        try:
            self.app.log.logging(self.format(record))
        except Exception:
            # The logging convention: a failing handler reports through handleError, never
            # raising into the code that logged.
            self.handleError(record)


def _is_terminal_handler(handler: logging.Handler) -> bool:
    """Return True for handlers that write to a stream rather than to a file."""
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler
    )


def _loggers_with_handlers() -> list[logging.Logger]:
    loggers = [logging.getLogger()]
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger) and logger.handlers:
            loggers.append(logger)
    return loggers


@contextmanager
def logs_routed_to_app(app: App[object]) -> Iterator[AppLogHandler]:
    """Move stream handlers aside and log to ``app`` instead, until the block ends.

    File handlers stay in place. Python warnings are captured into logging for the same time,
    because ``warnings.showwarning`` writes to stderr too. Everything is put back on exit.
    """
    removed: list[tuple[logging.Logger, logging.Handler]] = []
    for logger in _loggers_with_handlers():
        for handler in list(logger.handlers):
            if _is_terminal_handler(handler):
                logger.removeHandler(handler)
                removed.append((logger, handler))

    # Records of a logger that does not propagate never reach the root, so it gets the app
    # handler too. Without it they would go to Python's last-resort handler on stderr.
    app_handler = AppLogHandler(app)
    isolated = [logger for logger, _ in removed if not logger.propagate]
    targets = list(dict.fromkeys([logging.getLogger(), *isolated]))
    for logger in targets:
        logger.addHandler(app_handler)

    with warnings.catch_warnings():
        logging.captureWarnings(True)
        try:
            yield app_handler
        finally:
            logging.captureWarnings(False)
            for logger in targets:
                logger.removeHandler(app_handler)
            for logger, handler in removed:
                logger.addHandler(handler)
