"""Render the conversion engine's plan, progress and result for the conversion wizard.

The functions only format the engine's records (``Plan``, ``Progress``, ``Result``); they never
plan, write or verify anything. Importing this module never imports torch: the engine's types
are named for the type checker only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from olmo_inspect.tui.text import format_bytes, format_count, join_styled, safe, safe_text

if TYPE_CHECKING:
    from olmo_inspect.convert.engine import Plan, Result
    from olmo_inspect.convert.progress import Progress

SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3600

# Output files listed in the plan; a Transformers output of a 70B model has a few dozen.
MAX_PLAN_FILES = 40


def format_duration(seconds: float | None) -> str:
    """Format seconds as ``1:02:03`` or ``2:03``; None (an unknown ETA) shows as ``-``."""
    if seconds is None:
        return "-"
    whole = max(round(seconds), 0)
    hours, rest = divmod(whole, SECONDS_PER_HOUR)
    minutes, secs = divmod(rest, SECONDS_PER_MINUTE)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def _field_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def _files_table(plan: Plan) -> Table:
    table = Table(box=None, padding=(0, 1), header_style="bold", expand=False)
    table.add_column("file", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("contents", overflow="fold")
    for item in plan.files[:MAX_PLAN_FILES]:
        contents = f"{format_count(item.tensors)} tensors" if item.tensors else str(item.format)
        table.add_row(safe(item.path), Text(format_bytes(item.nbytes)), Text(contents))

    hidden = len(plan.files) - MAX_PLAN_FILES
    if hidden > 0:
        table.add_row(Text(f"… {hidden:,} more files", style="dim"), Text(""), Text(""))
    return table


def plan_renderable(plan: Plan) -> RenderableType:
    """Build the plan view: summary fields, output files, dropped tensors, notes and problems."""
    tensors = len(plan.steps)
    materialised = tensors - plan.copied
    disk_style = "red" if plan.disk_needed > plan.disk_free else ""

    table = _field_table()
    kinds = join_styled((str(plan.source.kind), ""), ("->", "dim"), (str(plan.target), "bold"))
    table.add_row("convert", kinds)
    table.add_row("output", safe(plan.output))
    table.add_row("device", safe(plan.device))
    table.add_row("dtype", Text(plan.options.dtype or "unchanged"))
    table.add_row(
        "tensors",
        Text(
            f"{format_count(tensors)} ({format_count(plan.copied)} byte copies, "
            f"{format_count(materialised)} materialised), {format_bytes(plan.tensor_bytes)}"
        ),
    )
    table.add_row("peak memory", Text(f"about {format_bytes(plan.peak_memory)} (estimate)"))
    table.add_row(
        "disk",
        Text(
            f"{format_bytes(plan.disk_needed)} needed, {format_bytes(plan.disk_free)} free",
            style=disk_style,
        ),
    )
    table.add_row("verify", Text("after writing" if plan.options.verify else "skipped"))

    parts: list[RenderableType] = [table, Text(""), Text("Files", style="bold underline")]
    parts.append(_files_table(plan))

    if plan.dropped:
        parts.extend([Text(""), Text("Not converted", style="bold underline")])
        for name, reason in plan.dropped.items():
            parts.append(join_styled((safe_text(name), ""), (safe_text(reason), "dim")))

    if plan.notes:
        parts.extend([Text(""), Text("Notes", style="bold underline")])
        parts.extend(Text(f"• {safe_text(note)}") for note in plan.notes)

    if plan.problems:
        parts.extend([Text(""), Text("Problems: the run is blocked", style="bold red")])
        parts.extend(Text(f"✘ {safe_text(problem)}", style="red") for problem in plan.problems)
    return Group(*parts)


def progress_text(record: Progress) -> Text:
    """Describe one progress record: phase, tensors, bytes, rate and estimated time left."""
    rate = f"{format_bytes(int(record.rate))}/s" if record.rate > 0 else "-"
    return Text(
        f"{record.phase}: {format_count(record.tensors_done)} of "
        f"{format_count(record.tensors_total)} tensors, {format_bytes(record.bytes_done)} of "
        f"{format_bytes(record.bytes_total)}, {rate}, "
        f"{format_duration(record.elapsed)} elapsed, ETA {format_duration(record.eta)}"
    )


def result_renderable(result: Result) -> RenderableType:
    """Build the result view: where the output is, what was written and the verify report."""
    table = _field_table()
    table.add_row("output", safe(result.output))
    table.add_row(
        "written",
        Text(
            f"{format_count(len(result.files))} files, {format_count(result.tensors)} tensors, "
            f"{format_bytes(result.bytes)} in {format_duration(result.seconds)} "
            f"({format_count(result.byte_copies)} byte copies)"
        ),
    )

    report = result.verify
    if report is None:
        table.add_row("verify", Text("skipped", style="yellow"))
    elif report.ok:
        table.add_row(
            "verify",
            Text(
                f"passed: {format_count(report.checked)} tensors identical to the source",
                style="green",
            ),
        )
    else:
        table.add_row("verify", Text("failed", style="bold red"))
        for mismatch in report.mismatches:
            table.add_row("", Text(safe_text(mismatch), style="red"))
    if report is not None and report.transformers_check:
        table.add_row("transformers", safe(report.transformers_check))
    return table
