"""The conversion wizard: pick a target kind, set options, review the plan, run and see the result.

The wizard only gathers options and shows what the conversion engine returns. Planning and
running call ``olmo_inspect.convert.engine.plan`` and ``run`` in worker threads, the same
functions the ``convert`` command calls; the wizard never writes a file itself. The engine
(and with it torch) is imported inside those workers, so opening the wizard stays fast.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    Button,
    Checkbox,
    ContentSwitcher,
    Footer,
    Input,
    Label,
    OptionList,
    ProgressBar,
    Select,
    Static,
)
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from olmo_inspect.errors import InspectError
from olmo_inspect.model import Checkpoint, CheckpointKind
from olmo_inspect.tui.convert_text import plan_renderable, progress_text, result_renderable
from olmo_inspect.tui.messages import OpenPath
from olmo_inspect.tui.text import join_styled, safe_text

if TYPE_CHECKING:
    from olmo_inspect.convert.engine import Plan, Result
    from olmo_inspect.convert.progress import Progress

log = logging.getLogger(__name__)

# Wizard steps, in order; each is one child of the content switcher.
STEP_TARGET = "step-target"
STEP_OPTIONS = "step-options"
STEP_PLAN = "step-plan"
STEP_RUN = "step-run"

PLAN_GROUP = "convert-plan"
RUN_GROUP = "convert-run"

# Select values: "keep" leaves every dtype as stored.
DTYPE_KEEP = "keep"
DTYPE_CHOICES = (DTYPE_KEEP, "float32", "bfloat16", "float16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
SHARD_SIZE_PLACEHOLDER = "engine default (5GB)"


class ConversionCancelled(Exception):
    """Raised from the progress callback when the user pressed Cancel; the engine cleans up."""


RunStopped = InspectError | OSError | ConversionCancelled


@dataclass
class WizardChoices:
    """The options the user set in the wizard, before they become ``ConvertOptions``.

    ``max_shard_size`` is the text typed (``"5GB"``), or None for the engine's default.
    """

    target: CheckpointKind
    output: Path
    dtype: str | None
    safetensors: bool
    model_only: bool
    max_shard_size: str | None
    device: str
    force: bool
    verify: bool


def source_folder(checkpoint: Checkpoint) -> Path:
    """Return the checkpoint's folder: its path, or the parent of a single-file checkpoint."""
    path = Path(checkpoint.path)
    return path.parent if path.is_file() else path


def default_output(checkpoint: Checkpoint, target: CheckpointKind) -> Path:
    """Return the default output folder: a sibling of the source named ``<name>-<target>``."""
    folder = source_folder(checkpoint).absolute()
    return folder.parent / f"{folder.name}-{target}"


def plan_conversion(source: Checkpoint, choices: WizardChoices) -> Plan:
    """Build ``ConvertOptions`` from ``choices`` and ask the engine for a plan; writes nothing.

    Runs in a worker thread, because importing the engine imports torch.

    Raises:
        InspectError: the engine rejects the target or an option (``ConversionError``,
            ``UsageError``).
    """
    from olmo_inspect.convert import engine

    options = engine.ConvertOptions(
        output=choices.output,
        dtype=choices.dtype,
        safetensors=choices.safetensors,
        model_only=choices.model_only,
        max_shard_size=choices.max_shard_size or engine.DEFAULT_MAX_SHARD_SIZE,
        device=choices.device,
        force=choices.force,
        verify=choices.verify,
    )
    return engine.plan(source, choices.target, options)


def _target_prompt(kind: CheckpointKind, reason: str | None) -> Text:
    if reason is None:
        return Text(str(kind), style="bold")
    return join_styled((str(kind), "dim strike"), (safe_text(reason), "dim italic"))


class ConvertScreen(Screen[None]):
    """A four-step wizard that converts one checkpoint with the conversion engine.

    Args:
        checkpoint: The source checkpoint, as the inspector loaded it.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.targets = self._valid_targets()
        self.target: CheckpointKind | None = None
        self.plan: Plan | None = None
        self.result: Result | None = None
        self._cancel = threading.Event()
        self._suggested_output = ""

    def _valid_targets(self) -> dict[CheckpointKind, str | None]:
        """Return every kind with None when it is a valid target, else the reason it is not."""
        from olmo_inspect.convert.mapping import valid_targets

        if self.checkpoint.problems:
            reason = f"the checkpoint is incomplete ({self.checkpoint.problems[0]})"
            return dict.fromkeys(CheckpointKind, reason)
        return valid_targets(self.checkpoint)

    def compose(self) -> ComposeResult:
        """Yield the heading, the four steps and the footer."""
        heading = join_styled(
            ("Convert", "bold"),
            (f" {self.checkpoint.kind} ", "bold reverse"),
            (safe_text(str(self.checkpoint.path)), "bold"),
        )
        yield Static(heading, id="convert-heading")
        with ContentSwitcher(initial=STEP_TARGET, id="convert-steps"):
            with Vertical(id=STEP_TARGET):
                yield Static(self._target_hint(), id="target-hint")
                yield OptionList(*self._target_options(), id="targets")

            with VerticalScroll(id=STEP_OPTIONS):
                yield Static("2. Options", classes="step-title")
                yield from self._option_fields()
                with Horizontal(classes="step-buttons"):
                    yield Button("Back", id="options-back")
                    yield Button("Plan", variant="primary", id="make-plan")

            with Vertical(id=STEP_PLAN):
                yield Static("3. Plan", classes="step-title")
                with VerticalScroll(id="plan-scroll"):
                    yield Static("", id="plan-view")
                with Horizontal(classes="step-buttons"):
                    yield Button("Back", id="plan-back")
                    yield Button("Run", variant="primary", id="run", disabled=True)

            with Vertical(id=STEP_RUN):
                yield Static("4. Run", classes="step-title")
                yield ProgressBar(id="run-progress", show_eta=False)
                yield Static("", id="run-status")
                with VerticalScroll(id="result-scroll"):
                    yield Static("", id="run-result")
                with Horizontal(classes="step-buttons"):
                    yield Button("Cancel", variant="error", id="cancel")
                    yield Button("Open output", variant="primary", id="open-output")
                    yield Button("Close", id="close")
        yield Footer()

    def _target_hint(self) -> Text:
        text = Text("1. Target kind", style="bold")
        text.append("\nPick the kind to convert to; greyed kinds show why they are not possible.")
        return text

    def _target_options(self) -> list[Option]:
        return [
            Option(_target_prompt(kind, reason), id=kind.value, disabled=reason is not None)
            for kind, reason in self.targets.items()
        ]

    def _option_fields(self) -> ComposeResult:
        with Horizontal(classes="field"):
            yield Label("output folder", classes="field-label")
            yield Input(id="output")
        with Horizontal(classes="field"):
            yield Label("dtype", classes="field-label")
            yield Select(
                [(choice, choice) for choice in DTYPE_CHOICES],
                value=DTYPE_KEEP,
                allow_blank=False,
                id="dtype",
            )
        with Horizontal(classes="field"):
            yield Label("max shard size", classes="field-label")
            yield Input(placeholder=SHARD_SIZE_PLACEHOLDER, id="max-shard-size")
        with Horizontal(classes="field"):
            yield Label("device", classes="field-label")
            yield Select(
                [(choice, choice) for choice in DEVICE_CHOICES],
                value=DEVICE_CHOICES[0],
                allow_blank=False,
                id="device",
            )
        yield Checkbox("write OLMo and OLMo-core files as .safetensors, not .pt", id="safetensors")
        yield Checkbox("model only (no optimizer or trainer state)", id="model-only")
        yield Checkbox("replace the output folder if it exists", id="force")
        yield Checkbox("verify every written tensor against the source", value=True, id="verify")

    def on_mount(self) -> None:
        """Focus the target list on its first valid target."""
        targets = self.query_one("#targets", OptionList)
        targets.focus()
        for index, reason in enumerate(self.targets.values()):
            if reason is None:
                targets.highlighted = index
                break

    # --- steps -------------------------------------------------------------------------------

    @property
    def step(self) -> str:
        """Id of the step on screen."""
        return self.query_one(ContentSwitcher).current or STEP_TARGET

    def show_step(self, step: str) -> None:
        """Show ``step`` and focus its main widget."""
        self.query_one(ContentSwitcher).current = step
        focus = {
            STEP_TARGET: "#targets",
            STEP_OPTIONS: "#output",
            STEP_PLAN: "#plan-back",
            STEP_RUN: "#cancel",
        }[step]
        self.query_one(focus).focus()
        self.refresh_bindings()

    @on(OptionList.OptionSelected, "#targets")
    def choose_target(self, event: OptionList.OptionSelected) -> None:
        """Take the selected kind as the target and show the options step."""
        option_id = event.option.id
        if option_id is None or self.targets.get(CheckpointKind(option_id)) is not None:
            return
        self.select_target(CheckpointKind(option_id))

    def select_target(self, target: CheckpointKind) -> None:
        """Set ``target`` and show the options, suggesting a sibling output folder.

        Raises:
            ValueError: ``target`` is not a valid target of this checkpoint.
        """
        reason = self.targets.get(target)
        if reason is not None:
            raise ValueError(f"{target} is not a valid target of {self.checkpoint.path}: {reason}")

        self.target = target
        output = self.query_one("#output", Input)
        suggestion = str(default_output(self.checkpoint, target))
        if not output.value or output.value == self._suggested_output:
            output.value = suggestion
        self._suggested_output = suggestion
        self.show_step(STEP_OPTIONS)

    def choices(self) -> WizardChoices:
        """Return the values the options step contains now."""
        if self.target is None:
            raise ValueError("no target kind has been chosen yet")

        dtype = self.query_one("#dtype", Select).value
        shard_size = self.query_one("#max-shard-size", Input).value.strip()
        return WizardChoices(
            target=self.target,
            output=Path(self.query_one("#output", Input).value.strip()).expanduser(),
            dtype=None if dtype == DTYPE_KEEP else str(dtype),
            safetensors=self.query_one("#safetensors", Checkbox).value,
            model_only=self.query_one("#model-only", Checkbox).value,
            max_shard_size=shard_size or None,
            device=str(self.query_one("#device", Select).value),
            force=self.query_one("#force", Checkbox).value,
            verify=self.query_one("#verify", Checkbox).value,
        )

    # --- plan --------------------------------------------------------------------------------

    @on(Button.Pressed, "#make-plan")
    def action_make_plan(self) -> None:
        """Ask the engine for a plan in a worker thread and show the plan step."""
        choices = self.choices()
        self.plan = None
        self.query_one("#run", Button).disabled = True
        self.show_step(STEP_PLAN)
        if not str(choices.output).strip() or str(choices.output) == ".":
            self._show_plan_error("Type an output folder to create.")
            return

        self.query_one("#plan-view", Static).update(Text("Planning …", style="dim"))
        self.run_worker(
            lambda: self._plan_or_error(choices),
            thread=True,
            group=PLAN_GROUP,
            exclusive=True,
            exit_on_error=False,
        )

    def _plan_or_error(self, choices: WizardChoices) -> Plan | InspectError | OSError:
        """Return the engine's plan, or the error it raised; runs in a worker thread."""
        try:
            return plan_conversion(self.checkpoint, choices)
        except (InspectError, OSError) as error:
            log.warning("planning the conversion of %s failed: %s", self.checkpoint.path, error)
            return error

    def _show_plan(self, plan: Plan) -> None:
        self.plan = plan
        self.query_one("#plan-view", Static).update(plan_renderable(plan))
        run = self.query_one("#run", Button)
        run.disabled = bool(plan.problems)
        if not run.disabled:
            run.focus()

    def _show_plan_error(self, message: str) -> None:
        text = Text("The engine cannot plan this conversion:\n", style="bold red")
        text.append(safe_text(message, multiline=True), style="red")
        self.query_one("#plan-view", Static).update(text)
        self.query_one("#run", Button).disabled = True

    # --- run ---------------------------------------------------------------------------------

    @on(Button.Pressed, "#run")
    def action_run(self) -> None:
        """Run the planned conversion in a worker thread, with progress and a Cancel button."""
        plan = self.plan
        if plan is None or plan.problems:
            return

        self._cancel.clear()
        self.result = None
        self.query_one("#cancel", Button).disabled = False
        self.query_one("#open-output", Button).disabled = True
        self.query_one("#close", Button).disabled = True
        self.query_one("#run-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#run-status", Static).update(Text("Starting …", style="dim"))
        self.query_one("#run-result", Static).update("")
        self.show_step(STEP_RUN)
        self.run_worker(
            lambda: self._run_plan(plan),
            thread=True,
            group=RUN_GROUP,
            exclusive=True,
            exit_on_error=False,
        )

    def _run_plan(self, plan: Plan) -> Result | RunStopped:
        """Call the engine's ``run`` and return its result or why it stopped; runs in a worker.

        The engine has removed its temporary folder by the time an error reaches this method.
        """
        from olmo_inspect.convert import engine

        try:
            return engine.run(plan, self._report_progress)
        except (InspectError, OSError, ConversionCancelled) as error:
            log.warning("conversion of %s stopped: %s", self.checkpoint.path, error)
            return error

    def _report_progress(self, record: Progress) -> None:
        """Hand ``record`` to the UI thread; raise to stop the run once Cancel was pressed.

        The engine calls this between tensors, so a cancel takes effect after the tensor in
        progress; the engine then removes its temporary folder.
        """
        keep_going = self.app.call_from_thread(self._show_progress, record)
        if not keep_going:
            raise ConversionCancelled(f"conversion of {self.checkpoint.path} cancelled")

    def _show_progress(self, record: Progress) -> bool:
        """Show ``record``; return False when the user asked to cancel."""
        if self._cancel.is_set():
            return False

        total = max(record.bytes_total, 1)
        self.query_one("#run-progress", ProgressBar).update(
            total=total, progress=min(record.bytes_done, total)
        )
        self.query_one("#run-status", Static).update(progress_text(record))
        return True

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Ask the running conversion to stop at its next progress report."""
        if self._cancel.is_set():
            return
        self._cancel.set()
        self.query_one("#cancel", Button).disabled = True
        self.query_one("#run-status", Static).update(Text("Cancelling …", style="yellow"))

    def _show_result(self, result: Result) -> None:
        self.result = result
        self.query_one("#run-status", Static).update(
            Text("Done. The output is in place.", style="green")
        )
        self.query_one("#run-result", Static).update(result_renderable(result))
        self._finish_run(can_open=True)

    def _show_run_error(self, error: BaseException) -> None:
        if isinstance(error, ConversionCancelled):
            text = Text(
                "Cancelled. The engine removed its temporary folder; nothing was written.",
                style="yellow",
            )
        else:
            text = Text("The conversion failed; nothing was written:\n", style="bold red")
            text.append(safe_text(str(error), multiline=True), style="red")
        self.query_one("#run-status", Static).update(text)
        self._finish_run(can_open=False)

    def _finish_run(self, *, can_open: bool) -> None:
        self.query_one("#cancel", Button).disabled = True
        self.query_one("#close", Button).disabled = False
        open_output = self.query_one("#open-output", Button)
        open_output.disabled = not can_open
        (open_output if can_open else self.query_one("#close", Button)).focus()
        self.refresh_bindings()

    @on(Button.Pressed, "#open-output")
    def action_open_output(self) -> None:
        """Open the converted checkpoint in the inspector."""
        if self.result is not None:
            self.post_message(OpenPath(self.result.output))

    # --- workers and navigation --------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Show the plan, the result or the error of a finished worker.

        Expected errors come back as the workers' results. Any other exception ends the worker
        in the error state. It is logged with its traceback and shown, so that a bug in the
        engine does not close the inspector.
        """
        worker = event.worker
        if event.state == WorkerState.ERROR and worker.error is not None:
            log.error("conversion of %s failed", self.checkpoint.path, exc_info=worker.error)
            outcome: object = worker.error
        elif event.state == WorkerState.SUCCESS:
            outcome = worker.result
        else:
            return

        if worker.group == PLAN_GROUP:
            if isinstance(outcome, BaseException):
                self._show_plan_error(str(outcome))
            else:
                self._show_plan(outcome)  # type: ignore[arg-type]
        elif worker.group == RUN_GROUP:
            if isinstance(outcome, BaseException):
                self._show_run_error(outcome)
            else:
                self._show_result(outcome)  # type: ignore[arg-type]

    def running(self) -> bool:
        """Return True while a conversion runs."""
        return any(
            worker.group == RUN_GROUP and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)
            for worker in self.workers
        )

    def action_back(self) -> None:
        """Go back one step, leave the wizard from the first step, or cancel a running run."""
        step = self.step
        if step == STEP_RUN and self.running():
            self.action_cancel()
            return
        if step in (STEP_TARGET, STEP_RUN):
            self.dismiss()
            return
        if step == STEP_OPTIONS:
            self.show_step(STEP_TARGET)
            return
        self.show_step(STEP_OPTIONS)

    @on(Button.Pressed, "#options-back")
    def back_to_targets(self) -> None:
        """Return from the options to the target list."""
        self.show_step(STEP_TARGET)

    @on(Button.Pressed, "#plan-back")
    def back_to_options(self) -> None:
        """Return from the plan to the options."""
        self.show_step(STEP_OPTIONS)

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        """Leave the wizard."""
        self.dismiss()

    def on_unmount(self) -> None:
        """Stop a running conversion when the wizard goes away (for example on quit)."""
        self._cancel.set()
