"""Drive the conversion wizard with Pilot on sample checkpoints and the real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open
from textual.widgets import Button, Checkbox, Input, OptionList
from tui_helpers import records_loader, static_text, wait_for_load
from tui_records import SHARDED_PATH, sharded_checkpoint

from olmo_inspect.convert import engine
from olmo_inspect.convert.layout import MANIFEST_FILE
from olmo_inspect.convert.mapping import valid_targets
from olmo_inspect.errors import ConversionError
from olmo_inspect.model import CheckpointKind
from olmo_inspect.tui import InspectApp
from olmo_inspect.tui.screens.convert import (
    STEP_OPTIONS,
    STEP_PLAN,
    STEP_RUN,
    STEP_TARGET,
    ConvertScreen,
    default_output,
)
from olmo_inspect.tui.screens.inspect import InspectScreen

SIZE = (160, 50)
REPO_ROOT = Path(__file__).resolve().parents[2]

SampleFactory = Callable[..., object]


async def _open_wizard(app: InspectApp, pilot: object) -> ConvertScreen:
    await wait_for_load(pilot)  # type: ignore[arg-type]
    await pilot.press("c")  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]
    screen = app.screen
    assert isinstance(screen, ConvertScreen)
    return screen


async def _pick_target(screen: ConvertScreen, pilot: object, target: CheckpointKind) -> None:
    options = screen.query_one("#targets", OptionList)
    options.highlighted = options.get_option_index(target.value)
    await pilot.press("enter")  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]


async def _make_plan(screen: ConvertScreen, pilot: object, output: Path) -> None:
    screen.query_one("#output", Input).value = str(output)
    await pilot.click("#make-plan")  # type: ignore[attr-defined]
    await screen.app.workers.wait_for_complete()
    await pilot.pause()  # type: ignore[attr-defined]


async def test_wizard_converts_to_transformers(
    sample_factory: SampleFactory, tmp_path: Path
) -> None:
    sample = sample_factory("olmo1-unsharded")
    output = tmp_path / "olmo1-hf"

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_wizard(app, pilot)
        await _pick_target(screen, pilot, CheckpointKind.TRANSFORMERS)
        suggested = screen.query_one("#output", Input).value

        await _make_plan(screen, pilot, output)
        plan = screen.plan
        plan_text = static_text(screen.query_one("#plan-view"), width=240)
        run_enabled = not screen.query_one("#run", Button).disabled

        await pilot.click("#run")
        await app.workers.wait_for_complete()
        await pilot.pause()
        step = screen.step
        result_text = static_text(screen.query_one("#run-result"), width=240)

        await pilot.click("#open-output")
        await wait_for_load(pilot)
        opened = app.screen

    manifest = json.loads((output / MANIFEST_FILE).read_text())
    with safe_open(output / "model.safetensors", framework="pt") as handle:
        written = len(list(handle.keys()))

    assert suggested == str(sample.path.parent / f"{sample.path.name}-transformers")
    assert plan is not None
    assert plan.target == CheckpointKind.TRANSFORMERS
    assert f"{len(plan.steps)} ({plan.copied} byte copies" in plan_text
    assert run_enabled
    assert step == STEP_RUN
    assert manifest["target"] == "transformers"
    assert manifest["verify"]["ok"] is True
    assert manifest["verify"]["checked"] == written
    assert f"passed: {written} tensors identical to the source" in result_text
    assert str(output) in result_text
    assert isinstance(opened, InspectScreen)
    assert opened.checkpoint.kind == CheckpointKind.TRANSFORMERS
    assert Path(opened.checkpoint.path) == output


async def test_invalid_target_not_selectable(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_wizard(app, pilot)
        checkpoint = screen.checkpoint
        options = screen.query_one("#targets", OptionList)
        highlighted = set()
        for _ in range(options.option_count * 2):
            highlighted.add(options.get_option_at_index(options.highlighted).id)
            await pilot.press("down")
        disabled = {
            options.get_option_at_index(index).id
            for index in range(options.option_count)
            if options.get_option_at_index(index).disabled
        }
        prompt = str(options.get_option(CheckpointKind.OLMO_CORE.value).prompt)
        step = screen.step

    reasons = valid_targets(checkpoint)
    valid = {kind.value for kind, reason in reasons.items() if reason is None}
    assert disabled == {kind.value for kind, reason in reasons.items() if reason is not None}
    assert highlighted == valid
    assert reasons[CheckpointKind.OLMO_CORE] in prompt
    assert step == STEP_TARGET


async def test_incomplete_checkpoint_has_no_target() -> None:
    checkpoint = sharded_checkpoint(world_size=2, missing_rank=1)

    app = InspectApp([SHARDED_PATH], loader=records_loader({SHARDED_PATH: checkpoint}))
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_wizard(app, pilot)
        options = screen.query_one("#targets", OptionList)
        prompts = [options.get_option_at_index(i) for i in range(options.option_count)]

    assert all(option.disabled for option in prompts)
    assert all(checkpoint.problems[0] in str(option.prompt) for option in prompts)


async def test_plan_inside_source_shows_error(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")
    inside = sample.path / "converted"
    try:
        engine.plan(
            _open(sample.path), CheckpointKind.TRANSFORMERS, engine.ConvertOptions(output=inside)
        )
    except ConversionError as error:
        expected = str(error)
    else:
        raise AssertionError("the engine planned an output inside its input")

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_wizard(app, pilot)
        await _pick_target(screen, pilot, CheckpointKind.TRANSFORMERS)
        await _make_plan(screen, pilot, inside)
        plan_text = static_text(screen.query_one("#plan-view"), width=400)
        run_disabled = screen.query_one("#run", Button).disabled
        step = screen.step

    assert step == STEP_PLAN
    assert "cannot plan this conversion" in plan_text
    assert expected in plan_text
    assert run_disabled
    assert not inside.exists()


async def test_plan_existing_output_blocks_run(
    sample_factory: SampleFactory, tmp_path: Path
) -> None:
    sample = sample_factory("olmo1-unsharded")
    output = tmp_path / "taken"
    output.mkdir()
    (output / "keep.txt").write_text("mine")

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_wizard(app, pilot)
        await _pick_target(screen, pilot, CheckpointKind.OLMO_UNSHARDED)
        await _make_plan(screen, pilot, output)
        problems = list(screen.plan.problems) if screen.plan else []
        plan_text = static_text(screen.query_one("#plan-view"), width=400)
        run_disabled = screen.query_one("#run", Button).disabled

        await pilot.press("escape")
        back_step = screen.step

    assert problems
    assert f"{output} already exists" in problems[0]
    assert problems[0] in plan_text
    assert run_disabled
    assert back_step == STEP_OPTIONS
    assert sorted(path.name for path in output.iterdir()) == ["keep.txt"]


async def test_cancel_leaves_no_output(sample_factory: SampleFactory, tmp_path: Path) -> None:
    sample = sample_factory("olmo1-unsharded")
    output = tmp_path / "cancelled"

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_wizard(app, pilot)
        await _pick_target(screen, pilot, CheckpointKind.OLMO_UNSHARDED)
        screen.query_one("#safetensors", Checkbox).value = True
        await _make_plan(screen, pilot, output)
        planned = screen.plan is not None and not screen.plan.problems

        # Cancel before the UI thread handles the run's first progress report.
        screen.action_run()
        screen.action_cancel()
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = static_text(screen.query_one("#run-status"), width=240)
        open_disabled = screen.query_one("#open-output", Button).disabled

    assert planned
    assert "Cancelled" in status
    assert open_disabled
    assert not output.exists()
    assert sorted(os.listdir(tmp_path)) == []


async def test_palette_and_key_open_wizard(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")

    app = InspectApp([sample.path])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        command = next(
            command
            for command in app.get_system_commands(app.screen)
            if command.title == "convert: Start"
        )
        command.callback()
        await pilot.pause()
        from_palette = app.screen
        first_step = getattr(from_palette, "step", None)
        await pilot.press("escape")
        await pilot.pause()
        after_escape = app.screen

    assert isinstance(from_palette, ConvertScreen)
    assert first_step == STEP_TARGET
    assert isinstance(after_escape, InspectScreen)


def test_default_output_is_sibling(sample_factory: SampleFactory) -> None:
    sample = sample_factory("olmo1-unsharded")
    checkpoint = _open(sample.path)

    output = default_output(checkpoint, CheckpointKind.HF_OLMO)

    assert output == sample.path.absolute().parent / f"{sample.path.name}-hf-olmo"


def test_convert_screen_import_skips_torch() -> None:
    code = (
        "import sys, olmo_inspect.tui.screens.convert; "
        "print(sorted(m for m in sys.modules if m == 'torch'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.strip() == "[]"


def _open(path: Path) -> object:
    from olmo_inspect.inspect import open_path

    return open_path(path)
