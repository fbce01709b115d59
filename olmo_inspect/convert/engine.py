"""Plan, run and verify a conversion between checkpoint kinds.

``plan`` decides everything before a byte is written: every output file, every tensor with its
sources, dtype and whether it is byte-copied or materialised (and why), the memory and disk the
run needs. ``run`` streams one tensor at a time into a temporary sibling folder, verifies it and
renames it into place, so an interrupted run never leaves an output that looks complete.
``verify`` re-reads every output tensor with the safetensors library or
``torch.load(weights_only=True)`` and compares it with its source. The CLI and the TUI call
these same functions. The input checkpoint is only ever read.

This module imports torch only where a tensor is materialised or a CUDA device is named.
``run`` writes a Transformers config built on a background thread (see
``MappingOptions.defer_transformers_config``) after the tensor files, so that importing
transformers overlaps the byte copies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_inspect import __version__
from olmo_inspect.convert.layout import (
    MANIFEST_FILE,
    FileFormat,
    Method,
    OutputFile,
    TensorStep,
    build_layout,
    unshard_target,
)
from olmo_inspect.convert.progress import ProgressCallback, ProgressTracker
from olmo_inspect.convert.pt_writer import PtWriter
from olmo_inspect.convert.safetensors_writer import SafetensorsWriter, TensorSpec
from olmo_inspect.errors import ConversionError, UsageError
from olmo_inspect.model import Checkpoint, CheckpointKind

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Default largest Transformers weight file, as huggingface_hub's sharding helpers default it.
DEFAULT_MAX_SHARD_SIZE = "5GB"
# Overrides the free bytes of the output filesystem, so tests can exercise the disk check.
DISK_FREE_ENV = "OLMO_INSPECT_DISK_FREE_BYTES"
# Devices the ``device`` option accepts besides ``cuda:N``.
DEVICE_CHOICES = ("auto", "cpu", "cuda")
MEMINFO_PATH = "/proc/meminfo"
SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
# Bytes a byte copy buffers at a time (the pread/write path and .pt CRC copies).
COPY_BUFFER_BYTES = 16 * 1024 * 1024


@dataclass
class ConvertOptions:
    """Options of one conversion. ``output`` is the folder to create.

    ``dtype`` casts floating-point model tensors (optimizer state keeps its dtype);
    ``safetensors`` writes OLMo and OLMo-core model and optimizer files as safetensors instead
    of ``.pt``; ``max_shard_size`` is bytes or a string such as ``"5GB"``.
    """

    output: Path
    dtype: str | None = None
    safetensors: bool = False
    model_only: bool = False
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE
    device: str = "auto"
    force: bool = False
    verify: bool = True
    verify_logits: bool = False
    mapping_options: Any = None


@dataclass
class Plan:
    """Everything a run will do, decided before writing. ``problems`` block ``run``."""

    source: Checkpoint
    target: CheckpointKind
    options: ConvertOptions
    output: Path
    device: str
    files: list[OutputFile]
    steps: list[TensorStep]
    dropped: dict[str, str]
    notes: list[str]
    problems: list[str]
    peak_memory: int
    disk_needed: int
    disk_free: int

    @property
    def tensor_bytes(self) -> int:
        return sum(step.nbytes for step in self.steps)

    @property
    def copied(self) -> int:
        return sum(1 for step in self.steps if step.method == Method.COPY)

    def file_steps(self, path: str) -> list[TensorStep]:
        """Return the steps written to output file ``path``, in write order."""
        return [step for step in self.steps if step.file == path]

    def resolve_files(self) -> None:
        """Wait for text files built in the background and make ``disk_needed`` exact.

        Raises:
            ConversionError: a deferred text could not be built.
        """
        if not any(item.pending for item in self.files):
            return
        for item in self.files:
            item.resolve()
        self.disk_needed = sum(item.nbytes for item in self.files)

    def to_json(self) -> dict[str, Any]:
        """Return the plan as JSON-ready data; waits for deferred text files first."""
        self.resolve_files()
        return {
            "source": str(self.source.path),
            "source_kind": str(self.source.kind),
            "target": str(self.target),
            "output": str(self.output),
            "device": self.device,
            "options": options_json(self.options),
            "files": [item.to_json() for item in self.files],
            "tensors": [step.to_json() for step in self.steps],
            "dropped": self.dropped,
            "notes": self.notes,
            "problems": self.problems,
            "bytes": self.tensor_bytes,
            "byte_copies": self.copied,
            "peak_memory_estimate": self.peak_memory,
            "disk_needed": self.disk_needed,
            "disk_free": self.disk_free,
        }


@dataclass
class VerifyReport:
    """Result of ``verify``: the tensors checked and every difference, one sentence each."""

    checked: int = 0
    mismatches: list[str] = field(default_factory=list)
    transformers_check: str | None = None
    logits: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "mismatches": self.mismatches,
            "transformers_check": self.transformers_check,
            "logits": self.logits,
        }


@dataclass
class Result:
    """Summary of a finished conversion: output folder, files, counts and the verify report."""

    output: Path
    files: list[str]
    tensors: int
    bytes: int
    byte_copies: int
    seconds: float
    verify: VerifyReport | None

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "files": self.files,
            "tensors": self.tensors,
            "bytes": self.bytes,
            "byte_copies": self.byte_copies,
            "seconds": round(self.seconds, 3),
            "verify": self.verify.to_json() if self.verify is not None else None,
        }


def options_json(options: ConvertOptions) -> dict[str, Any]:
    return {
        "dtype": options.dtype,
        "safetensors": options.safetensors,
        "model_only": options.model_only,
        "max_shard_size": options.max_shard_size,
        "device": options.device,
        "force": options.force,
        "verify": options.verify,
        "verify_logits": options.verify_logits,
    }


def resolve_device(device: str) -> str:
    """Return the device a run uses: ``auto`` picks CUDA when torch can use one, else CPU.

    Raises:
        UsageError: the name is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        ConversionError: CUDA was asked for but torch has none (a CPU build raises
            ``AssertionError`` on CUDA use, so this is checked first).
    """
    import torch

    name = device.strip().lower()
    if name == "auto":
        return "cuda" if _cuda_usable() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not _cuda_usable():
            raise ConversionError(f"device {device}: torch sees no CUDA device; use --device cpu")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConversionError(
                f"device {device}: only {torch.cuda.device_count()} CUDA devices are visible"
            )
        return name
    raise UsageError(f"device {device!r} is invalid; use auto, cpu, cuda or cuda:N")


def _cuda_usable() -> bool:
    import torch

    try:
        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    except (AssertionError, RuntimeError):
        return False


def plan(
    source: Checkpoint,
    target: CheckpointKind,
    options: ConvertOptions,
    mapping: Any = None,
) -> Plan:
    """Plan converting ``source`` to ``target`` into ``options.output``; writes nothing.

    ``mapping`` is a ``MappingResult``; by default ``convert.mapping.build_mapping`` makes it.

    Raises:
        ConversionError: the target cannot be built from this source, a source tensor is
            neither mapped nor dropped, or the output is inside the input.
        UsageError: an option is invalid.
    """
    output = Path(options.output).expanduser().absolute()
    _check_output_location(source, output)
    if options.dtype is not None:
        from olmo_inspect.tensors import torch_dtype

        torch_dtype(options.dtype)
    default_shard_size = parse_shard_size(DEFAULT_MAX_SHARD_SIZE)
    options.max_shard_size = parse_shard_size(options.max_shard_size)
    shard_size_given = options.max_shard_size != default_shard_size
    if options.device.strip().lower() != "auto":
        resolve_device(options.device)
    if mapping is None:
        mapping = _build_mapping(source, target, options)
    _check_coverage(source, mapping)

    layout = build_layout(source, target, options, mapping)
    for step in layout.steps:
        step.method, step.why = _choose_method(source, step)
    device = _plan_device(options, layout.steps)

    notes = list(mapping.notes) + layout.notes
    notes += _unused_option_notes(target, options, shard_size_given)
    for stale in sorted(output.parent.glob(f".{output.name}.tmp-*")):
        notes.append(f"{stale} is left from an interrupted run; remove it to free its space")
    problems: list[str] = []
    if output.exists() and not options.force:
        problems.append(f"{output} already exists; pass --force to replace it")
    elif output.exists() and not _replaceable(output):
        problems.append(
            f"{output} exists and is neither empty, a checkpoint nor an olmo-inspect output, "
            "so --force will not delete it; choose another output folder"
        )
    disk_needed = sum(item.nbytes for item in layout.files)
    disk_free = _disk_free(output.parent)
    if disk_needed > disk_free:
        problems.append(
            f"{output.parent}: the output needs {disk_needed} bytes but only {disk_free} are "
            "free; free some space or choose another output folder"
        )

    peak_memory = _peak_memory(layout.steps)
    if options.verify_logits:
        logits_memory = _logits_memory(layout.steps)
        available = available_memory()
        if available is not None and logits_memory > available:
            problems.append(
                f"--verify-logits needs about {logits_memory} bytes to hold both models but "
                f"only {available} are available; drop --verify-logits"
            )
        peak_memory = max(peak_memory, logits_memory)

    return Plan(
        source=source,
        target=target,
        options=options,
        output=output,
        device=device,
        files=layout.files,
        steps=layout.steps,
        dropped=dict(mapping.dropped),
        notes=notes,
        problems=problems,
        peak_memory=peak_memory,
        disk_needed=disk_needed,
        disk_free=disk_free,
    )


def _plan_device(options: ConvertOptions, steps: list[TensorStep]) -> str:
    """Resolve the device; ``auto`` is the CPU, without asking torch, when nothing is computed.

    Byte copies use no device, and verification compares on the CPU as well as anywhere, so
    probing CUDA (which imports torch) would only slow such a plan down.
    """
    computes = options.verify_logits or any(step.method != Method.COPY for step in steps)
    if options.device.strip().lower() == "auto" and not computes:
        return "cpu"
    return resolve_device(options.device)


def parse_shard_size(value: int | str) -> int:
    """Return ``value`` in bytes; accepts ints and strings such as ``"5GB"``, ``"500MiB"``.

    KB, MB, GB and TB are powers of 1000, as huggingface_hub reads them; KiB to TiB are
    powers of 1024.

    Raises:
        UsageError: the string has no known unit or the size is not positive.
    """
    if isinstance(value, int):
        size = value
    else:
        text = value.strip().upper().replace(" ", "")
        number = text.rstrip("KMGTIB")
        unit = text[len(number) :] or "B"
        factor = SIZE_UNITS.get(unit)
        try:
            size = int(float(number) * factor) if factor is not None else -1
        except ValueError:
            size = -1
        if factor is None or size < 0:
            raise UsageError(
                f"max shard size {value!r} is invalid; give a size such as 5GB or 500MB"
            )
    if size <= 0:
        raise UsageError(f"max shard size {value!r} is invalid; give a positive size such as 5GB")
    return size


def _check_output_location(source: Checkpoint, output: Path) -> None:
    source_root = Path(source.path).resolve()
    if source_root.is_file():
        source_root = source_root.parent
    resolved = output.resolve()
    if resolved == source_root or source_root in resolved.parents:
        raise ConversionError(
            f"{output}: the output is inside the input checkpoint {source_root}; "
            "choose a folder outside it"
        )
    if resolved in source_root.parents:
        # Replacing this folder (with --force) would delete the input with it.
        raise ConversionError(
            f"{output}: the output folder contains the input checkpoint {source_root}; "
            "choose a new folder beside it"
        )
    if not output.parent.is_dir():
        raise ConversionError(f"{output.parent}: folder not found; create it first")


def _unused_option_notes(
    target: CheckpointKind, options: ConvertOptions, shard_size_given: bool
) -> list[str]:
    """Return a note for each option that has no effect on this target, so none is silent."""
    notes = []
    if target == CheckpointKind.TRANSFORMERS:
        if options.safetensors:
            notes.append("--safetensors has no effect: Transformers weights are always safetensors")
        if options.model_only:
            notes.append("--model-only has no effect: a Transformers output holds the model only")
    elif shard_size_given:
        notes.append(f"--max-shard-size has no effect: {target.value} is written as one file")
    return notes


def _replaceable(output: Path) -> bool:
    """Return True when ``--force`` may delete ``output``: empty, ours, or a checkpoint."""
    if not output.is_dir():
        return False
    if not any(output.iterdir()) or (output / MANIFEST_FILE).is_file():
        return True
    from olmo_inspect.detect import detect
    from olmo_inspect.errors import InspectError

    try:
        detection = detect(output)
    except InspectError:
        return False
    return detection.kind is not None


def _build_mapping(source: Checkpoint, target: CheckpointKind, options: ConvertOptions) -> Any:
    try:
        from olmo_inspect.convert import mapping as mapping_module
    except ImportError:
        mapping_module = None

    if mapping_module is None:
        if target in (source.kind, unshard_target(source.kind)):
            from olmo_inspect.convert.layout import identity_mapping

            return identity_mapping(source)
        raise ConversionError(f"{source.path}: no mapping from {source.kind} to {target}")

    reason = mapping_module.valid_targets(source).get(target, f"{target} is not a known target")
    if reason is not None:
        raise ConversionError(f"{source.path}: cannot convert {source.kind} to {target}: {reason}")
    mapping_options = options.mapping_options
    if mapping_options is None:
        mapping_options = mapping_module.MappingOptions(dtype=options.dtype)
    return mapping_module.build_mapping(source, target, mapping_options)


def _check_coverage(source: Checkpoint, mapping: Any) -> None:
    used = {piece.name for item in mapping.mappings for piece in item.sources}
    known = {tensor.name for tensor in source.tensors}
    missing_sources = sorted(used - known)
    if missing_sources:
        raise ConversionError(
            f"{source.path}: the mapping reads tensors the checkpoint does not have: "
            f"{', '.join(missing_sources[:5])}; the checkpoint may be incomplete"
        )
    uncovered = sorted(known - used - set(mapping.dropped))
    if uncovered:
        raise ConversionError(
            f"{source.path}: {len(uncovered)} source tensors are neither converted nor dropped "
            f"({', '.join(uncovered[:5])}); this tool does not know their place in the target, "
            "so nothing was written"
        )


def _choose_method(source: Checkpoint, step: TensorStep) -> tuple[Method, str]:
    from olmo_inspect.tensors import byte_ranges

    if step.literal is not None:
        return Method.MATERIALISE, "pickled value"
    if step.transform not in (None, "reshape"):
        return Method.MATERIALISE, f"{step.transform} needs the values"
    if step.source_dtype != step.dtype:
        return Method.MATERIALISE, f"cast {step.source_dtype} to {step.dtype}"

    for piece, tensor in zip(step.sources, step.inputs, strict=True):
        rows = piece.rows or (0, tensor.shape[0] if tensor.shape else 1)
        if not tensor.shape or byte_ranges(source, tensor, rows[0], rows[1]) is None:
            return Method.MATERIALISE, f"{piece.name} is not one contiguous run of bytes"
    if len(step.sources) == 1 and step.sources[0].rows is None:
        return Method.COPY, "same dtype, contiguous storage"
    return Method.COPY, "row ranges of contiguous storage"


def _peak_memory(steps: list[TensorStep]) -> int:
    """Estimate the peak memory of the largest step: its sources, its output and one copy."""
    peak = COPY_BUFFER_BYTES
    for step in steps:
        if step.method == Method.COPY:
            continue
        peak = max(peak, step.source_nbytes + 2 * step.nbytes)
    return peak


def _logits_memory(steps: list[TensorStep]) -> int:
    """Estimate the memory of the logits check: both models in float32, plus one tensor read."""
    float32_size = 4
    model = sum(math.prod(step.shape) * float32_size for step in steps if step.role == "model")
    largest = max((step.nbytes for step in steps), default=0)
    return 2 * model + 2 * largest


def available_memory() -> int | None:
    """Return MemAvailable from ``/proc/meminfo`` in bytes, or None where it cannot be read."""
    try:
        with open(MEMINFO_PATH, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _disk_free(folder: Path) -> int:
    override = os.environ.get(DISK_FREE_ENV)
    if override:
        return int(override)
    return shutil.disk_usage(folder).free


def temporary_folder(output: Path) -> Path:
    """Return the temporary sibling folder a run writes before renaming it to ``output``."""
    return output.parent / f".{output.name}.tmp-{os.getpid()}"


def run(plan: Plan, progress: ProgressCallback | None = None) -> Result:
    """Write the planned output into a temporary sibling folder, verify it and rename it.

    Any error or ``KeyboardInterrupt`` (also one raised by ``progress``) removes the temporary
    folder and leaves an existing output untouched.

    Raises:
        ConversionError: the plan has problems, a write fails or verification fails.
    """
    import time

    if plan.problems:
        raise ConversionError(plan.problems[0])
    started = time.monotonic()
    temporary = temporary_folder(plan.output)
    if temporary.exists():
        shutil.rmtree(temporary)

    report: VerifyReport | None = None
    try:
        temporary.mkdir()
        _write_all(plan, temporary, progress)
        if plan.options.verify or plan.options.verify_logits:
            report = verify(plan, temporary, progress)
            if not report.ok:
                raise ConversionError(
                    f"{plan.output}: verification failed ({report.mismatches[0]}); "
                    "nothing was written"
                )
        _write_manifest(plan, temporary, report)
        _replace_output(plan, temporary)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise

    return Result(
        output=plan.output,
        files=[item.path for item in plan.files] + [MANIFEST_FILE],
        tensors=len(plan.steps),
        bytes=plan.tensor_bytes,
        byte_copies=plan.copied,
        seconds=time.monotonic() - started,
        verify=report,
    )


def _replace_output(plan: Plan, temporary: Path) -> None:
    if plan.output.exists():
        if not plan.options.force:
            raise ConversionError(f"{plan.output} appeared during the run; nothing was replaced")
        old = plan.output.parent / f".{plan.output.name}.old-{os.getpid()}"
        os.rename(plan.output, old)
        os.rename(temporary, plan.output)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
        return
    os.rename(temporary, plan.output)


def _write_all(plan: Plan, folder: Path, progress: ProgressCallback | None) -> None:
    tracker = ProgressTracker("write", len(plan.steps), plan.tensor_bytes, progress)
    deferred = [item for item in plan.files if item.pending]
    with _SourceFiles() as sources:
        for item in plan.files:
            if item.pending:
                continue
            path = folder / item.path
            path.parent.mkdir(parents=True, exist_ok=True)
            if item.format == FileFormat.TEXT:
                path.write_text(item.content or "", encoding="utf-8")
            elif item.format == FileFormat.COPY:
                assert item.copy_from is not None
                shutil.copyfile(Path(plan.source.path) / item.copy_from, path)
            else:
                _write_tensor_file(plan, item, path, sources, tracker)

    # NOTE: a config that transformers fails to build is only reported here, after the copies.
    plan.resolve_files()
    for item in deferred:
        (folder / item.path).write_text(item.content or "", encoding="utf-8")


def _write_tensor_file(
    plan: Plan, item: OutputFile, path: Path, sources: _SourceFiles, tracker: ProgressTracker
) -> None:
    steps = plan.file_steps(item.path)
    if item.format == FileFormat.PT:
        writer: PtWriter | SafetensorsWriter = PtWriter(path, item.tree)
    else:
        specs = [TensorSpec(step.key, step.dtype, step.shape) for step in steps]
        writer = SafetensorsWriter(path, specs, item.metadata)

    try:
        for step in steps:
            if step.method == Method.COPY:
                ranges = [
                    (sources.fd(span.file), span.offset, span.length)
                    for span in _step_ranges(plan.source, step)
                ]
                writer.copy_bytes(step.key, ranges)
            else:
                value = compute_step(plan.source, step, plan.device)
                writer.write_tensor(step.key, value.to("cpu"))
                del value
            tracker.advance(step.target, step.nbytes)
        writer.close()
    except BaseException:
        writer.abort()
        raise


def _step_ranges(source: Checkpoint, step: TensorStep) -> list[Any]:
    from olmo_inspect.tensors import byte_ranges

    spans = []
    for piece, tensor in zip(step.sources, step.inputs, strict=True):
        rows = piece.rows or (0, tensor.shape[0])
        found = byte_ranges(source, tensor, rows[0], rows[1])
        if found is None:
            raise ConversionError(f"{source.path}: {piece.name} can no longer be byte-copied")
        spans.extend(found)
    return spans


def compute_step(source: Checkpoint, step: TensorStep, device: str = "cpu") -> torch.Tensor:
    """Compute one output tensor from its sources: read, concatenate, transform, cast.

    Raises:
        ConversionError: the result does not have the planned shape.
    """
    import torch

    from olmo_inspect.tensors import read_rows, read_tensor, torch_dtype

    if step.literal is not None:
        return torch.frombuffer(bytearray(step.literal), dtype=torch.uint8)

    parts = []
    for piece, tensor in zip(step.sources, step.inputs, strict=True):
        if piece.rows is None:
            parts.append(read_tensor(source, tensor, device))
        else:
            parts.append(read_rows(source, tensor, piece.rows[0], piece.rows[1]).to(device))
    value = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    del parts

    if step.transform == "transpose":
        # The mapping's contract: view the rows as (shape[1], shape[0]) and transpose, which
        # also covers OLMo-core's 3-D per-expert slices of shape (1, d, h).
        value = value.reshape(step.shape[1], step.shape[0]).t()
    elif step.transform == "reshape" or (step.transform is None and value.dim() == 0):
        value = value.reshape(step.shape)
    elif step.transform is not None:
        raise ConversionError(f"{step.target}: transform {step.transform!r} is not supported")

    if tuple(value.shape) != tuple(step.shape):
        raise ConversionError(
            f"{source.path}: {step.target} comes out as {tuple(value.shape)} but the plan "
            f"expects {tuple(step.shape)}; the mapping does not fit this checkpoint"
        )
    return value.to(torch_dtype(step.dtype)).contiguous()


class _SourceFiles(contextlib.AbstractContextManager["_SourceFiles"]):
    """Read-only descriptors of source files, opened once each and closed together."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def fd(self, path: Path) -> int:
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    def __exit__(self, *exc_info: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _written_file_json(item: Any, folder: Path) -> dict[str, Any]:
    """Return the plan's record of a file with its size as written, not as estimated."""
    record = item.to_json()
    path = folder / item.path
    if path.is_file():
        record["bytes"] = path.stat().st_size
    return record


def _write_manifest(plan: Plan, folder: Path, report: VerifyReport | None) -> None:
    manifest = {
        "tool": "olmo-inspect",
        "version": __version__,
        "source": str(Path(plan.source.path).absolute()),
        "source_kind": str(plan.source.kind),
        "source_step": plan.source.step,
        "target": str(plan.target),
        "options": options_json(plan.options),
        "device": plan.device,
        "files": [_written_file_json(item, folder) for item in plan.files],
        "mapping": {
            "tensors": len(plan.steps),
            "byte_copies": plan.copied,
            "materialised": len(plan.steps) - plan.copied,
            "dropped": plan.dropped,
            "notes": plan.notes,
        },
        "verify": report.to_json() if report is not None else None,
    }
    text = json.dumps(manifest, indent=2, default=str)
    (folder / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")


def verify(
    plan: Plan, folder: Path | None = None, progress: ProgressCallback | None = None
) -> VerifyReport:
    """Re-read every output tensor and compare it with its source; see ``convert.verify``."""
    from olmo_inspect.convert.verify import verify_output

    return verify_output(plan, folder or plan.output, progress)


__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "ConvertOptions",
    "Plan",
    "Result",
    "VerifyReport",
    "compute_step",
    "plan",
    "resolve_device",
    "run",
    "verify",
]
