"""Benchmark: time from process start to the inspector's first full screen of a checkpoint.

Each measured process runs the real ``InspectApp`` headless (no terminal) on one checkpoint
and exits as soon as the inspect screen has mounted and drawn its tensor tree, which the app
announces with the ``CheckpointShown`` message. The process time (exec to exit, warm page
cache, median of 5) is therefore the time to the first full screen plus the app's shutdown.
Checkpoints: the OLMo-1B-shaped one from ``harness.build_olmo_1b`` and a small sample.

Run: ``python bench/tui_open.py`` (the first run writes a 2.35 GB checkpoint to the cache,
``$OLMO_INSPECT_BENCH_CACHE`` or ``~/.cache/olmo-inspect/bench``). Target: under 1 s.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import build_olmo_1b, cache_dir, format_table, measure, python_command

# Terminal size of the headless app, in columns and rows.
TERMINAL_SIZE = (140, 42)
TARGET_SECONDS = 1.0


def show_first_screen(path: Path) -> int:
    """Open ``path`` in a headless ``InspectApp`` and return once its first full screen is drawn.

    An error screen never posts ``CheckpointShown`` and would wait forever, so the measured
    command passes a checkpoint that opens; the return code is the app's.
    """
    from olmo_inspect.tui import InspectApp, app
    from olmo_inspect.tui.messages import CheckpointShown

    class FirstScreenApp(InspectApp):
        # Textual resolves a relative CSS_PATH against the subclass's file, this script.
        CSS_PATH = str(Path(app.__file__).with_name(InspectApp.CSS_PATH))

        def on_checkpoint_shown(self, message: CheckpointShown) -> None:
            self.exit(return_code=0)

    first_screen = FirstScreenApp([path])
    first_screen.run(headless=True, size=TERMINAL_SIZE)
    return first_screen.return_code or 0


def driver_command(path: Path) -> list[str]:
    """Return the command that opens ``path`` headless and exits on its first full screen."""
    return [sys.executable, str(Path(__file__).resolve()), "--first-screen", str(path)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--first-screen", type=Path, metavar="PATH", help="(driver) open PATH once and exit"
    )
    args = parser.parse_args()
    if args.first_screen is not None:
        sys.exit(show_first_screen(args.first_screen))

    large = build_olmo_1b("bfloat16")
    small = cache_dir() / "olmo1-small"
    if not (small / "model.pt").exists():
        from olmo_inspect.samples import build_sample

        shutil.rmtree(small, ignore_errors=True)
        build_sample("olmo1-unsharded", small)

    size_gb = (large / "model.pt").stat().st_size / 1e9
    small_mb = sum(path.stat().st_size for path in small.iterdir()) / 1e6
    print(f"large checkpoint: {large} ({size_gb:.2f} GB model.pt)")
    print(f"small checkpoint: {small} ({small_mb:.1f} MB)")

    tui_large = measure(f"TUI first screen ({size_gb:.2f} GB)", driver_command(large), args.repeats)
    tui_small = measure(
        f"TUI first screen ({small_mb:.0f} MB)", driver_command(small), args.repeats
    )
    bare_textual = measure(
        "import textual.app (no app)", python_command("import textual.app"), args.repeats
    )
    print(format_table([tui_large, tui_small, bare_textual], tui_large))

    for item in (tui_large, tui_small):
        verdict = "meets" if item.median_seconds < TARGET_SECONDS else "misses"
        print(f"{item.label}: {item.median_seconds:.3f} s, {verdict} the {TARGET_SECONDS} s target")


if __name__ == "__main__":
    main()
