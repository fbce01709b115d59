"""Check a conversion's output against its source.

Safetensors outputs are read back with ``safetensors.safe_open``. A ``.pt`` output must load with
``torch.load(weights_only=True, mmap=True)``, which also provides each tensor's dtype and shape,
but its values are read with this package's ``pread`` reader. Every tensor is compared bit for
bit with the value the plan computes from the source (after the cast, when a dtype was
requested). A Transformers output is also instantiated on the meta device to check that the
model would load without missing, unexpected or mis-shaped keys. ``--verify-logits`` runs both
sides on a fixed input.

Memory: a file mapping keeps every page it has touched in the process's RSS until it is
unmapped. So the ``safe_open`` handle is reopened once ``VERIFY_MAP_BUDGET`` bytes were read
through it, and the values of a ``.pt`` output are never read through torch's mapping.
"""

from __future__ import annotations

import filecmp
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from olmo_inspect.convert.layout import FileFormat, OutputFile, TensorStep
from olmo_inspect.convert.progress import ProgressCallback, ProgressTracker
from olmo_inspect.errors import ConversionError, InspectError
from olmo_inspect.io.torch_file import read_torch_file
from olmo_inspect.io.unpickler import TensorRecord
from olmo_inspect.model import Checkpoint, CheckpointKind, TensorInfo
from olmo_inspect.tensors import dtype_name, read_tensor

if TYPE_CHECKING:
    from olmo_inspect.convert.engine import Plan, VerifyReport

log = logging.getLogger(__name__)

# The fixed input of the logits check: this many token ids, 1, 2, ... modulo the vocab size.
LOGITS_TOKENS = 16
# Logits tolerance without a cast (float32 on both sides, the same weights) ...
LOGITS_TOLERANCE = 1e-4
# ... and with a cast, relative to the largest logit (bfloat16 keeps about 3 decimal digits).
LOGITS_CAST_TOLERANCE = 5e-2
# Tensor bytes read through one ``safe_open`` handle before it is closed and reopened, which
# unmaps the file and releases the pages read so far from the process's RSS.
VERIFY_MAP_BUDGET = 256 * 1024 * 1024


def verify_output(plan: Plan, folder: Path, progress: ProgressCallback | None) -> VerifyReport:
    """Compare every file and tensor in ``folder`` with the content ``plan`` expects."""
    from olmo_inspect.convert.engine import VerifyReport

    report = VerifyReport()
    tracker = ProgressTracker("verify", len(plan.steps), plan.tensor_bytes, progress)
    for item in plan.files:
        path = folder / item.path
        if not path.is_file():
            report.mismatches.append(f"{item.path} is missing")
            continue
        if item.format == FileFormat.TEXT:
            if path.read_text(encoding="utf-8") != (item.content or ""):
                report.mismatches.append(f"{item.path} differs from the planned text")
        elif item.format == FileFormat.COPY:
            assert item.copy_from is not None
            if not filecmp.cmp(Path(plan.source.path) / item.copy_from, path, shallow=False):
                report.mismatches.append(f"{item.path} differs from {item.copy_from}")
        elif item.format == FileFormat.SAFETENSORS:
            _verify_safetensors(plan, item, path, report, tracker)
        else:
            _verify_pt(plan, item, path, report, tracker)

    if plan.target == CheckpointKind.TRANSFORMERS and report.ok:
        _verify_transformers_keys(folder, report)
    if plan.options.verify_logits and report.ok:
        report.logits = verify_logits(plan, folder)
        if not report.logits.get("ok", False):
            report.mismatches.append(f"logits differ: {report.logits.get('detail')}")
    return report


class BudgetedSafeOpen:
    """A ``safe_open`` handle on one file that is reopened after ``budget`` bytes were read.

    ``opens`` counts the handles opened so far. ``opener`` defaults to ``safetensors.safe_open``.
    """

    def __init__(
        self, path: Path, budget: int | None = None, opener: Callable[..., Any] | None = None
    ) -> None:
        if opener is None:
            from safetensors import safe_open

            opener = safe_open
        self.path = path
        self.budget = VERIFY_MAP_BUDGET if budget is None else budget
        self.opens = 0
        self._opener = opener
        self._context: Any = None
        self._handle: Any = None
        self._read_since_open = 0
        self._open()

    def keys(self) -> list[str]:
        """Return the tensor names in the file's header."""
        return list(self._handle.keys())

    def get_tensor(self, key: str) -> torch.Tensor:
        """Read tensor ``key``, first reopening the handle when the budget is spent."""
        if self._read_since_open >= self.budget:
            self.close()
            self._open()
        value = self._handle.get_tensor(key)
        self._read_since_open += value.numel() * value.element_size()
        return value

    def close(self) -> None:
        """Close the current handle, which unmaps the file."""
        if self._context is not None:
            self._context.__exit__(None, None, None)
        self._context = None
        self._handle = None

    def __enter__(self) -> BudgetedSafeOpen:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> None:
        self._context = self._opener(str(self.path), framework="pt")
        self._handle = self._context.__enter__()
        self._read_since_open = 0
        self.opens += 1


def _verify_safetensors(
    plan: Plan, item: OutputFile, path: Path, report: VerifyReport, tracker: ProgressTracker
) -> None:
    steps = plan.file_steps(item.path)
    with BudgetedSafeOpen(path) as reader:
        written = set(reader.keys())
        planned = {step.key for step in steps}
        for key in sorted(written - planned)[:5]:
            report.mismatches.append(f"{item.path} holds an unplanned tensor {key}")
        for step in steps:
            if step.key not in written:
                report.mismatches.append(f"{item.path} lacks {step.target}")
                continue
            _compare(plan, step, reader.get_tensor(step.key), item.path, report)
            tracker.advance(step.target, step.nbytes)
    log.debug("verified %s with %d safe_open handles", path, reader.opens)


def _verify_pt(
    plan: Plan, item: OutputFile, path: Path, report: VerifyReport, tracker: ProgressTracker
) -> None:
    try:
        loaded = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
    except Exception as error:  # torch raises several types for a bad zip or pickle
        report.mismatches.append(f"{item.path} does not load with torch.load: {error}")
        return

    # Keep only dtype and shape from torch's mapping: touching the values would map their pages.
    steps = plan.file_steps(item.path)
    if _count_tensors(loaded) != len(steps):
        report.mismatches.append(
            f"{item.path} holds {_count_tensors(loaded)} tensors, planned {len(steps)}"
        )
    loaded_meta: dict[str, tuple[str, tuple[int, ...]]] = {}
    for step in steps:
        node = _tree_node(loaded, step)
        if isinstance(node, torch.Tensor):
            loaded_meta[step.key] = (dtype_name(node.dtype), tuple(node.shape))
    del loaded

    try:
        stored = read_torch_file(path)
    except InspectError as error:
        report.mismatches.append(
            f"{item.path} loads with torch.load, but reading its metadata failed: {error}"
        )
        return
    folder = Checkpoint(path=path.parent, kind=plan.target)
    for step in steps:
        record = _tree_node(stored.value, step)
        if step.key not in loaded_meta or not isinstance(record, TensorRecord):
            report.mismatches.append(f"{item.path} lacks {step.target}")
            continue
        if loaded_meta[step.key] != (record.dtype, tuple(record.shape)):
            loaded_dtype, loaded_shape = loaded_meta[step.key]
            report.mismatches.append(
                f"{item.path}: torch.load reads {step.target} as {loaded_dtype} {loaded_shape}, "
                f"the file's pickle as {record.dtype} {tuple(record.shape)}"
            )
            continue
        info = TensorInfo(
            name=step.target,
            shape=tuple(record.shape),
            dtype=record.dtype,
            file=path.name,
            data=stored.stored_bytes(record, path.name),
        )
        try:
            actual = read_tensor(folder, info)
        except InspectError as error:
            report.mismatches.append(f"{item.path}: reading {step.target} failed: {error}")
            continue
        _compare(plan, step, actual, item.path, report)
        tracker.advance(step.target, step.nbytes)


def _tree_node(tree: Any, step: TensorStep) -> Any:
    """Return the object at ``step.tree_path`` inside a loaded ``.pt`` tree, or None."""
    assert step.tree_path is not None
    node: Any = tree
    for part in step.tree_path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _count_tensors(tree: Any) -> int:
    if isinstance(tree, torch.Tensor):
        return 1
    if isinstance(tree, dict):
        return sum(_count_tensors(value) for value in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(_count_tensors(value) for value in tree)
    return 0


def _compare(
    plan: Plan, step: TensorStep, actual: torch.Tensor, file: str, report: VerifyReport
) -> None:
    from olmo_inspect.convert.engine import compute_step

    report.checked += 1
    expected = compute_step(plan.source, step, plan.device).to("cpu")
    if actual.dtype != expected.dtype or tuple(actual.shape) != tuple(expected.shape):
        report.mismatches.append(
            f"{file}: {step.target} is {actual.dtype} {tuple(actual.shape)}, expected "
            f"{expected.dtype} {tuple(expected.shape)}"
        )
        return
    if not _same_bits(actual, expected):
        report.mismatches.append(f"{file}: {step.target} values differ from the source")


def _same_bits(left: torch.Tensor, right: torch.Tensor) -> bool:
    """Return True when both tensors hold the same bytes (so NaNs compare equal)."""
    if left.numel() == 0:
        return right.numel() == 0
    left_bytes = left.contiguous().reshape(-1).view(torch.uint8)
    right_bytes = right.contiguous().reshape(-1).view(torch.uint8)
    return torch.equal(left_bytes, right_bytes)


def _verify_transformers_keys(folder: Path, report: VerifyReport) -> None:
    """Instantiate the model on the meta device and compare its keys with the written files."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    expected = {name: tuple(value.shape) for name, value in _disk_state_dict(model).items()}
    tied = _tied_keys(model, config)

    written: dict[str, tuple[int, ...]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                written[key] = tuple(handle.get_slice(key).get_shape())

    missing = sorted(set(expected) - set(written) - tied)
    unexpected = sorted(set(written) - set(expected))
    mismatched = sorted(
        name for name in set(expected) & set(written) if expected[name] != written[name]
    )
    for name in missing[:5]:
        report.mismatches.append(f"transformers expects {name}, which no file holds")
    for name in unexpected[:5]:
        report.mismatches.append(f"{name} is written but transformers does not expect it")
    for name in mismatched[:5]:
        report.mismatches.append(
            f"{name} is written as {written[name]}, transformers expects {expected[name]}"
        )
    problems = len(missing) + len(unexpected) + len(mismatched)
    report.transformers_check = f"{type(model).__name__}: {len(expected)} keys, " + (
        "all present with matching shapes" if problems == 0 else f"{problems} problems"
    )


def _disk_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """Return the model's state dict under the names ``save_pretrained`` writes to disk.

    transformers 5 fuses some weights in memory (the experts of ``olmoe``, ``flex_olmo``) and
    splits them back when saving. ``revert_weight_conversion`` applies that split to the meta
    tensors. Older transformers keep the disk names in memory.
    """
    state = model.state_dict()
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return state
    return revert_weight_conversion(model, state)


def _tied_keys(model: Any, config: Any) -> set[str]:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if not getattr(text_config, "tie_word_embeddings", False):
        return set()
    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is output:
            return {f"{name}.weight"}
    return set()


def verify_logits(plan: Plan, folder: Path) -> dict[str, Any]:
    """Run the source and the output as Transformers models on a fixed input; compare logits.

    Each side that is not a Transformers checkpoint is mapped to Transformers tensors with
    ``convert.mapping`` and loaded into a model built from the config of the other side.
    """
    import tempfile

    from olmo_inspect.inspect import open_path

    output = open_path(folder)
    with tempfile.TemporaryDirectory(prefix="olmo-inspect-logits-") as scratch:
        try:
            config_dir = _config_folder(plan, folder, Path(scratch))
            left = _load_transformers_model(plan.source, config_dir, plan.device)
            right = _load_transformers_model(output, config_dir, plan.device)
        except (ImportError, ConversionError) as error:
            return {"ok": False, "detail": f"cannot build both models: {error}"}

    vocab = left.config.get_text_config().vocab_size
    tokens = (torch.arange(1, LOGITS_TOKENS + 1) % vocab).unsqueeze(0).to(plan.device)
    with torch.no_grad():
        left_logits = left(tokens).logits.float()
        right_logits = right(tokens).logits.float()
    difference = (left_logits - right_logits).abs().max().item()
    scale = left_logits.abs().max().item()
    tolerance = LOGITS_CAST_TOLERANCE * scale if plan.options.dtype else LOGITS_TOLERANCE
    ok = difference <= tolerance
    return {
        "ok": ok,
        "tokens": LOGITS_TOKENS,
        "max_abs_difference": difference,
        "tolerance": tolerance,
        "detail": f"max |difference| {difference:.3g}, tolerance {tolerance:.3g}",
    }


def _config_folder(plan: Plan, folder: Path, scratch: Path) -> Path:
    """Return a folder with the Transformers ``config.json`` both models are built from.

    Uses the Transformers side when there is one; otherwise writes the config the mapping to
    Transformers produces for the source into ``scratch``.
    """
    if plan.target == CheckpointKind.TRANSFORMERS:
        return folder
    if plan.source.kind == CheckpointKind.TRANSFORMERS:
        return Path(plan.source.path)

    from olmo_inspect.convert import mapping as mapping_module

    mapping = mapping_module.build_mapping(
        plan.source, CheckpointKind.TRANSFORMERS, mapping_module.MappingOptions()
    )
    (scratch / "config.json").write_text(mapping.files["config.json"], encoding="utf-8")
    return scratch


def _load_transformers_model(checkpoint: Checkpoint, config_dir: Path, device: str) -> Any:
    """Build a float32 Transformers model holding ``checkpoint``'s weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from olmo_inspect.convert.engine import compute_step
    from olmo_inspect.convert.layout import TensorStep

    if checkpoint.kind == CheckpointKind.TRANSFORMERS:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        model = AutoModelForCausalLM.from_pretrained(checkpoint.path, dtype=torch.float32)
        return model.to(device).eval()

    from olmo_inspect.convert import mapping as mapping_module

    mapping = mapping_module.build_mapping(
        checkpoint, CheckpointKind.TRANSFORMERS, mapping_module.MappingOptions()
    )
    config = AutoConfig.from_pretrained(config_dir)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = {tensor.name: tensor for tensor in checkpoint.tensors}
    state = {}
    for item in mapping.mappings:
        inputs = tuple(tensors[piece.name] for piece in item.sources)
        step = TensorStep(
            item.target,
            item.target,
            "",
            tuple(item.shape),
            "float32",
            inputs[0].dtype,
            tuple(item.sources),
            inputs,
            item.transform,
        )
        state[item.target] = compute_step(checkpoint, step)
    _missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ConversionError(
            f"{checkpoint.path}: the mapped tensors {unexpected[:3]} are not in the "
            "Transformers model; the mapping does not fit this config"
        )
    model.tie_weights()
    return model.to(device).eval()
