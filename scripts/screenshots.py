"""Regenerate the SVG screenshots in ``screenshots/``, one per screen and tab of the inspector.

Builds small sample checkpoints with ``olmo_inspect.samples`` (needs torch) into a scratch
folder, opens each in the real app with Textual's test driver and saves SVGs. The conversion
wizard's screenshots run a real conversion into the scratch folder. Run from the
repository root:

    python scripts/screenshots.py [--out screenshots] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
from pathlib import Path

from olmo_inspect.samples import build_sample
from olmo_inspect.tui import InspectApp

log = logging.getLogger("screenshots")

TERMINAL_SIZE = (140, 42)
SMALL_TERMINAL_SIZE = (80, 24)
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "olmo-inspect-screenshots"
UNSHARDED_SAMPLE = "olmo1-unsharded"
SHARDED_SAMPLE = "olmo1-sharded-torch-legacy"
CONVERT_TARGET = "transformers"

# Key, tab id and screenshot name of each tab of the inspect screen.
TABS = (
    ("1", "tensors", "inspect-tensors"),
    ("2", "config", "inspect-config"),
    ("3", "train-state", "inspect-train-state"),
    ("4", "files", "inspect-files"),
    ("5", "shards", "inspect-shards"),
    ("6", "problems", "inspect-problems"),
)


async def _wait_for_load(app: InspectApp, pilot: object) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]


async def save_tabs(path: Path, out: Path, prefix: str) -> None:
    """Open ``path`` and save one SVG per tab, named ``<prefix><tab>.svg``."""
    app = InspectApp([path])
    async with app.run_test(size=TERMINAL_SIZE) as pilot:
        await _wait_for_load(app, pilot)
        for key, tab, name in TABS:
            if tab not in app.screen.tab_ids():  # type: ignore[attr-defined]
                continue
            await pilot.press(key)
            await pilot.pause()
            app.save_screenshot(f"{prefix}{name}.svg", path=str(out))


async def save_screen(
    targets: list[Path],
    out: Path,
    name: str,
    keys: tuple[str, ...] = (),
    size: tuple[int, int] = TERMINAL_SIZE,
) -> None:
    """Open ``targets``, press ``keys`` and save the screen as ``<name>.svg``."""
    app = InspectApp(targets)
    async with app.run_test(size=size) as pilot:
        await _wait_for_load(app, pilot)
        if keys:
            await pilot.press(*keys)
            await _wait_for_load(app, pilot)
        app.save_screenshot(f"{name}.svg", path=str(out))


async def save_convert_wizard(path: Path, out: Path, output: Path) -> None:
    """Walk the conversion wizard on ``path`` to Transformers and save one SVG per step."""
    from textual.widgets import Input, OptionList

    app = InspectApp([path])
    async with app.run_test(size=TERMINAL_SIZE) as pilot:
        await _wait_for_load(app, pilot)
        await pilot.press("c")
        await pilot.pause()
        screen = app.screen
        targets = screen.query_one("#targets", OptionList)
        targets.highlighted = targets.get_option_index(CONVERT_TARGET)
        app.save_screenshot("convert-target.svg", path=str(out))

        await pilot.press("enter")
        await pilot.pause()
        screen.query_one("#output", Input).value = str(output)
        app.save_screenshot("convert-options.svg", path=str(out))

        await pilot.click("#make-plan")
        await _wait_for_load(app, pilot)
        app.save_screenshot("convert-plan.svg", path=str(out))

        await pilot.click("#run")
        await _wait_for_load(app, pilot)
        app.save_screenshot("convert-result.svg", path=str(out))


async def main(out: Path, work_dir: Path) -> None:
    """Build the samples into ``work_dir`` and write every screenshot into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    unsharded = build_sample(UNSHARDED_SAMPLE, work_dir / UNSHARDED_SAMPLE)
    sharded = build_sample(SHARDED_SAMPLE, work_dir / SHARDED_SAMPLE)

    run = work_dir / "run"
    for step in ("step2", "step3"):
        shutil.copytree(sharded.path, run / step)
    (run / "latest").symlink_to("step3")
    (run / "latest-unsharded").symlink_to("step9-unsharded")

    incomplete = work_dir / "incomplete" / "step3"
    shutil.copytree(sharded.path, incomplete)
    (incomplete / "rank1.pt").unlink()

    await save_tabs(unsharded.path, out, "unsharded-")
    await save_tabs(sharded.path, out, "sharded-")
    await save_screen([incomplete], out, "incomplete-problems", keys=("6",))
    await save_screen([incomplete], out, "incomplete-shards", keys=("5",))
    await save_screen([incomplete], out, "incomplete-80x24", size=SMALL_TERMINAL_SIZE)
    await save_screen([incomplete], out, "incomplete-shards-80x24", ("5",), SMALL_TERMINAL_SIZE)
    await save_screen([run], out, "run-folder")
    await save_screen([unsharded.path, sharded.path, run], out, "picker")
    await save_screen([work_dir / "no-such-checkpoint"], out, "error")
    await save_screen([unsharded.path], out, "filter", keys=("slash", *"ff_proj|*wte"))
    await save_convert_wizard(unsharded.path, out, work_dir / f"{UNSHARDED_SAMPLE}-hf")
    log.info("wrote screenshots to %s", out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"), help="folder for SVGs")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="scratch folder for samples (default: a temp dir)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    # A fixed default folder keeps the paths shown in the screenshots the same between runs.
    work_dir = args.work_dir or DEFAULT_WORK_DIR
    if args.work_dir is None and DEFAULT_WORK_DIR.exists():
        shutil.rmtree(DEFAULT_WORK_DIR)
    work_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args.out, work_dir))
