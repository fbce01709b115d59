"""Log records never reach the terminal while the inspector runs; failures become notifications."""

from __future__ import annotations

import io
import logging
import os
import shutil
from pathlib import Path

import pytest
from tui_helpers import records_loader, wait_for_load
from tui_records import UNSHARDED_PATH, unsharded_checkpoint

from olmo_inspect.errors import CheckpointNotFound
from olmo_inspect.tui import InspectApp

SIZE = (120, 40)


@pytest.fixture
def terminal_log() -> io.StringIO:
    """Attach a stderr-like stream handler to the root logger, as ``basicConfig`` would."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


async def test_export_failure_not_logged_to_terminal(
    sample_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, terminal_log: io.StringIO
) -> None:
    sample = sample_factory("olmo1-unsharded")
    copy = tmp_path / "ckpt"
    shutil.copytree(sample.path, copy)
    before = sorted(os.listdir(copy))
    monkeypatch.chdir(copy)

    app = InspectApp([copy])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        await pilot.press("e")
        await pilot.pause()
        notes = [(note.title, note.message) for note in app._notifications]
        printed_while_running = terminal_log.getvalue()

    assert printed_while_running == ""
    assert any(title == "Export failed" for title, _ in notes)
    assert sorted(os.listdir(copy)) == before


async def test_worker_warning_not_logged_to_terminal(terminal_log: io.StringIO) -> None:
    missing = Path("/data/no-such-checkpoint")
    records = {
        UNSHARDED_PATH: unsharded_checkpoint(),
        missing: CheckpointNotFound(f"{missing}: not found"),
    }

    app = InspectApp([UNSHARDED_PATH, missing], loader=records_loader(records))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        printed_while_running = terminal_log.getvalue()

    logging.getLogger("olmo_inspect.tui.app").warning("after the app")
    printed_after = terminal_log.getvalue()

    assert printed_while_running == ""
    assert printed_after == "after the app\n"
