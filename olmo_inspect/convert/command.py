"""The ``olmo-inspect convert`` command: parse options, plan, show progress, report.

It only gathers options and prints; the engine plans, writes and verifies. Errors are raised as
``InspectError``s for the CLI to print as one line with its exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from olmo_inspect.errors import (
    EXIT_INVALID,
    EXIT_OK,
    ConversionError,
    IncompleteCheckpoint,
    UsageError,
)
from olmo_inspect.model import CheckpointKind

log = logging.getLogger(__name__)

DTYPE_CHOICES = ("float32", "bfloat16", "float16")


# The kinds the engine writes; sharded kinds are read only.
WRITABLE_TARGETS = (
    CheckpointKind.OLMO_UNSHARDED,
    CheckpointKind.OLMO_CORE_UNSHARDED,
    CheckpointKind.TRANSFORMERS,
    CheckpointKind.HF_OLMO,
)


def add_convert_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``convert`` subcommand and its options to ``subparsers``."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint to another kind (unshard, OLMo to Transformers, ...)",
        description=(
            "Convert a checkpoint, streaming one tensor at a time into a temporary folder that "
            "is verified and then renamed to OUT. The input is never modified."
        ),
    )
    parser.add_argument("source", type=Path, metavar="SRC", help="checkpoint folder or file")
    parser.add_argument(
        "--to",
        dest="target",
        required=True,
        choices=[kind.value for kind in WRITABLE_TARGETS],
        metavar="KIND",
        help="target kind: " + ", ".join(kind.value for kind in WRITABLE_TARGETS),
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT",
        help="output folder to create (must not exist unless --force)",
    )
    parser.add_argument(
        "--dtype", choices=DTYPE_CHOICES, help="cast floating-point model tensors to this dtype"
    )
    parser.add_argument(
        "--safetensors",
        action="store_true",
        help="write OLMo model and optimizer files as .safetensors, not .pt",
    )
    parser.add_argument(
        "--model-only",
        action="store_true",
        help="write only the model weights and config (no optimizer or train state)",
    )
    parser.add_argument(
        "--max-shard-size",
        default=None,
        metavar="SIZE",
        help="largest Transformers weight file, e.g. 5GB or 500MB (default 5GB)",
    )
    parser.add_argument(
        "--device", default="auto", help="where tensors are materialised: auto, cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        metavar="PATH",
        help="tokenizer folder or tokenizer.json to ship with a Transformers output",
    )
    parser.add_argument(
        "--keep-eos-token-id",
        action="store_true",
        help="keep OLMo 1's eos_token_id 0 instead of setting 50279",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip re-reading and comparing every written tensor",
    )
    parser.add_argument(
        "--verify-logits",
        action="store_true",
        help=(
            "also load the output with transformers and compare its logits on a fixed input "
            "with the source weights mapped in memory; this checks loading and the written "
            "bytes, not the mapping itself (loads both models)"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the plan or result as JSON")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-vv for debug logs)"
    )
    return parser


def options_from_args(args: argparse.Namespace) -> Any:
    """Build ``ConvertOptions`` from parsed ``convert`` arguments.

    A run (not ``--dry-run``) builds a Transformers config on a background thread while the
    tensors are written, because importing transformers takes seconds.
    """
    from olmo_inspect.convert.engine import DEFAULT_MAX_SHARD_SIZE, ConvertOptions
    from olmo_inspect.convert.mapping import MappingOptions

    mapping_options = MappingOptions(
        fix_eos_token_id=not args.keep_eos_token_id,
        tokenizer_dir=args.tokenizer,
        dtype=args.dtype,
        defer_transformers_config=not args.dry_run,
    )
    return ConvertOptions(
        output=args.output,
        dtype=args.dtype,
        safetensors=args.safetensors,
        model_only=args.model_only,
        max_shard_size=args.max_shard_size or DEFAULT_MAX_SHARD_SIZE,
        device=args.device,
        force=args.force,
        verify=not args.no_verify,
        verify_logits=args.verify_logits,
        mapping_options=mapping_options,
    )


def run_convert(args: argparse.Namespace) -> int:
    """Plan and (unless ``--dry-run``) run a conversion; returns the exit code.

    Raises:
        InspectError: the source cannot be read, or the conversion cannot be planned or run.
    """
    from olmo_inspect.convert import engine
    from olmo_inspect.inspect import open_path
    from olmo_inspect.model import Checkpoint

    source = open_path(args.source)
    if not isinstance(source, Checkpoint):
        raise UsageError(
            f"{args.source} is a training run folder; pass one of its step checkpoints"
        )
    if source.problems:
        more = f" and {len(source.problems) - 1} more problems" if len(source.problems) > 1 else ""
        raise IncompleteCheckpoint(
            f"{args.source}: the checkpoint is incomplete ({source.problems[0]}{more}); "
            "restore the missing or damaged files before converting"
        )

    target = CheckpointKind(args.target)
    plan = engine.plan(source, target, options_from_args(args))
    if args.dry_run:
        if args.json:
            print(json.dumps(plan.to_json(), indent=2, default=str))
        else:
            print(render_plan(plan))
        return EXIT_OK if not plan.problems else EXIT_INVALID

    if plan.problems:
        raise ConversionError(plan.problems[0])
    if not args.json:
        print(render_plan(plan, tensors=False), file=sys.stderr)
    result = _run_with_progress(engine, plan, show=not args.json)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print(render_result(result))
    return EXIT_OK


def _run_with_progress(engine: Any, plan: Any, show: bool) -> Any:
    if not show or not sys.stderr.isatty():
        return engine.run(plan)

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(record: Any) -> None:
            if record.phase not in tasks:
                tasks[record.phase] = bar.add_task(record.phase, total=record.bytes_total)
            bar.update(
                tasks[record.phase],
                completed=record.bytes_done,
                description=f"{record.phase} {record.tensors_done}/{record.tensors_total}",
            )

        return engine.run(plan, update)


def render_plan(plan: Any, tensors: bool = True) -> str:
    """Render a plan as plain text: summary, files, tensors (optional), notes and problems.

    The full plan (``tensors``) waits for text files built in the background. The summary does
    not: it lists them as pending and the disk line counts them with an upper bound.
    """
    from olmo_inspect.convert.layout import Method

    if tensors:
        plan.resolve_files()
    pending = any(item.pending for item in plan.files)
    disk_prefix = "about " if pending else ""
    lines = [
        f"convert {plan.source.path} ({plan.source.kind}) -> {plan.target}",
        f"output   {plan.output}",
        f"device   {plan.device}    dtype {plan.options.dtype or 'unchanged'}",
        f"tensors  {len(plan.steps)} ({plan.copied} byte copies, "
        f"{len(plan.steps) - plan.copied} materialised), {_size(plan.tensor_bytes)}",
        f"memory   about {_size(plan.peak_memory)} at peak (estimate)",
        f"disk     {disk_prefix}{_size(plan.disk_needed)} needed, {_size(plan.disk_free)} free",
        "files:",
    ]
    for item in plan.files:
        if item.pending:
            lines.append(f"  {item.path:<40} {'pending':>10}  text, written after the tensors")
            continue
        count = f"{item.tensors} tensors" if item.tensors else str(item.format)
        lines.append(f"  {item.path:<40} {_size(item.nbytes):>10}  {count}")
    if tensors:
        lines.append("tensors:")
        for step in plan.steps:
            how = "copy" if step.method == Method.COPY else "materialise"
            detail = step.reason or ", ".join(piece.name for piece in step.sources)
            lines.append(
                f"  {step.target} {list(step.shape)} {step.dtype} <- {detail} [{how}: {step.why}]"
            )
    for name, reason in plan.dropped.items():
        lines.append(f"dropped  {name}: {reason}")
    for note in plan.notes:
        lines.append(f"note     {note}")
    for problem in plan.problems:
        lines.append(f"problem  {problem}")
    return "\n".join(lines)


def render_result(result: Any) -> str:
    """Render a finished conversion as plain text."""
    lines = [
        f"wrote {result.output}: {result.tensors} tensors, {_size(result.bytes)} "
        f"in {result.seconds:.1f} s ({result.byte_copies} byte copies)"
    ]
    if result.verify is None:
        lines.append("verify   skipped (--no-verify)")
    else:
        lines.append(f"verify   {result.verify.checked} tensors identical to the source")
        if result.verify.transformers_check:
            lines.append(f"verify   {result.verify.transformers_check}")
        if result.verify.logits:
            lines.append(f"logits   {result.verify.logits.get('detail')}")
    return "\n".join(lines)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
