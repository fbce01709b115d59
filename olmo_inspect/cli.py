"""Command line entry point ``olmo-inspect``.

``olmo-inspect PATH`` opens the TUI (``--json`` prints the same facts instead),
``olmo-inspect demo`` builds the demo checkpoints and opens them, ``olmo-inspect convert``
runs the conversion engine. Imports stay lazy: ``--json`` imports neither torch nor Textual.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from olmo_inspect import __version__
from olmo_inspect.errors import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, EXIT_USAGE, InspectError

log = logging.getLogger(__name__)

LOG_LEVEL_ENV = "OLMO_INSPECT_LOG"
SUBCOMMANDS = ("inspect", "convert", "demo")


def build_inspect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="olmo-inspect",
        description=(
            "Inspect an OLMo checkpoint directory (OLMo trainer, OLMo-core, Transformers, "
            "hf_olmo; unsharded or sharded) without loading its weights. Other commands: "
            "'olmo-inspect demo', 'olmo-inspect convert SRC --to KIND -o OUT'."
        ),
    )
    parser.add_argument("path", type=Path, help="checkpoint directory, run folder or weights file")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON on stdout")
    parser.add_argument(
        "--deep",
        action="store_true",
        help="parse every rank's metadata of a sharded checkpoint, not only rank 0's",
    )
    add_common_options(parser)
    return parser


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-vv for debug logs)"
    )
    parser.add_argument("--version", action="version", version=f"olmo-inspect {__version__}")


def configure_logging(verbose: int) -> None:
    level_name = os.environ.get(LOG_LEVEL_ENV, "")
    level = getattr(logging, level_name.upper(), None) if level_name else None
    if not isinstance(level, int):
        if verbose == 0:
            level = logging.WARNING
        elif verbose == 1:
            level = logging.INFO
        else:
            level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list and args_list[0] in SUBCOMMANDS else "inspect"
    if command != "inspect" or (args_list and args_list[0] == "inspect"):
        args_list = args_list[1:]

    debug = "--debug" in args_list
    try:
        if command == "convert":
            return run_convert_command(args_list)
        if command == "demo":
            return run_demo_command(args_list)
        return run_inspect_command(args_list)
    except InspectError as error:
        if debug:
            traceback.print_exc()
        print(f"olmo-inspect: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("olmo-inspect: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`); nothing left to report.
        sys.stderr.close()
        return EXIT_OK


def run_inspect_command(argv: list[str]) -> int:
    args = build_inspect_parser().parse_args(argv)
    configure_logging(args.verbose)
    if args.json:
        return print_json(args.path, deep=args.deep)
    if not sys.stdout.isatty():
        return print_text(args.path, deep=args.deep)

    from olmo_inspect.tui import run_inspector

    return run_inspector([args.path], deep=args.deep)


def checkpoint_json(result: Any) -> dict[str, Any]:
    """Return the ``--json`` document for a Checkpoint or RunFolder."""
    from olmo_inspect.model import RunFolder
    from olmo_inspect.summary import summarize

    if isinstance(result, RunFolder):
        return result.to_json()

    sharded = result.kind.is_sharded
    optimizer = result.optimizer
    return {
        "kind": str(result.kind),
        "path": str(result.path),
        "complete": result.complete,
        "problems": result.problems,
        "evidence": result.evidence,
        "notes": result.notes,
        "config_file": result.config_file,
        "config": result.config,
        "summary": summarize(result).to_json(),
        "world_size": result.world_size,
        "train_state": result.train_state.to_json() if result.train_state else None,
        "tensors": [tensor.to_json(with_shards=sharded) for tensor in result.tensors],
        "optimizer": optimizer.to_json() if optimizer else None,
        "optimizer_tensors": (
            [tensor.to_json(with_shards=sharded) for tensor in optimizer.tensors]
            if optimizer
            else []
        ),
        "files": [info.to_json() for info in result.files],
        "details": result.details,
    }


def print_json(path: Path, *, deep: bool) -> int:
    from olmo_inspect.inspect import open_path
    from olmo_inspect.model import RunFolder

    result = open_path(path, deep=deep)
    document = checkpoint_json(result)
    json.dump(document, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
    if isinstance(result, RunFolder):
        return EXIT_OK
    return EXIT_OK if result.complete else EXIT_INVALID


def print_text(path: Path, *, deep: bool) -> int:
    """Print a short plain-text report, for when stdout is not a terminal."""
    import humanize

    from olmo_inspect.inspect import open_path
    from olmo_inspect.model import RunFolder
    from olmo_inspect.summary import summarize

    result = open_path(path, deep=deep)
    if isinstance(result, RunFolder):
        print(f"run folder {result.path}: {len(result.checkpoints)} checkpoints")
        for entry in result.checkpoints:
            state = "complete" if entry.complete else "INCOMPLETE"
            latest = " (latest)" if entry.latest else ""
            print(
                f"  {entry.path.name}: step {_or_dash(entry.step)}, {_or_dash(entry.kind)}, "
                f"{humanize.naturalsize(entry.bytes, binary=True)}, {state}{latest}"
            )
            for problem in entry.problems:
                print(f"    problem: {problem}")
        for note in result.notes:
            print(f"  note: {note}")
        return EXIT_OK

    summary = summarize(result)
    verdict = "complete" if result.complete else "INCOMPLETE"
    print(f"{result.path}: {result.kind}, {verdict}")
    print(
        f"  step {_or_dash(result.step)}, {summary.parameters:,} parameters, "
        f"{humanize.naturalsize(summary.bytes, binary=True)} in {len(result.tensors)} tensors"
    )
    for problem in result.problems:
        print(f"  problem: {problem}")
    print("  (run in a terminal for the interactive view, or add --json)")
    return EXIT_OK if result.complete else EXIT_INVALID


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def run_demo_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="olmo-inspect demo",
        description="Build small demo checkpoints of every kind (once) and open the inspector.",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="where to build the demo checkpoints"
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the demo checkpoint paths instead of opening them",
    )
    add_common_options(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)

    from olmo_inspect.demo import demo_cache_dir, demo_paths, is_built

    if not is_built(args.cache_dir):
        print(
            f"Building demo checkpoints of every kind into {demo_cache_dir(args.cache_dir)} "
            "(once; about a minute on 2 cores)...",
            file=sys.stderr,
            flush=True,
        )
    paths = demo_paths(args.cache_dir)
    if args.list or not sys.stdout.isatty():
        for path in paths:
            print(path)
        return EXIT_OK

    from olmo_inspect.tui import run_inspector

    return run_inspector(paths)


def run_convert_command(argv: list[str]) -> int:
    from olmo_inspect.convert.command import add_convert_parser, run_convert

    parser = argparse.ArgumentParser(prog="olmo-inspect")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_convert_parser(subparsers)
    args = parser.parse_args(["convert", *argv])
    configure_logging(getattr(args, "verbose", 0))
    return run_convert(args)


def console_main() -> None:
    """Run the CLI as the ``olmo-inspect`` console script and exit with its code.

    After a conversion, tearing down torch and transformers at interpreter exit costs about
    0.5 s (measured on 2 cores), so once everything is written and flushed the process exits
    without that teardown. Code that calls :func:`main` in-process is not affected.
    """
    code = main()
    if "torch" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()

__all__ = ["EXIT_USAGE", "console_main", "main"]
