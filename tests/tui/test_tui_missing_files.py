"""The inspector on upstream sharded checkpoints with one rank file deleted.

Expected values come from each fixture's ``ground_truth.json``: the pieces stored in the deleted
file are the rows (or flattened elements) the app must report as not available.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tui_helpers import static_text, table_rows, wait_for_load

from olmo_inspect.tui import InspectApp
from olmo_inspect.tui.text import format_count
from olmo_inspect.tui.widgets.files_table import FilesTable
from olmo_inspect.tui.widgets.rank_balance import RankBalance
from olmo_inspect.tui.widgets.shard_layout import ShardLayout
from olmo_inspect.tui.widgets.tensor_details import TensorDetails
from olmo_inspect.tui.widgets.tensor_tree import MISSING_MARK, TensorTree

SIZE = (160, 50)

# (fixture folder, file deleted from the copy, prefix of that file in ground_truth.json names)
CASES = [
    ("olmo1-sharded-torch-legacy", "rank1.pt", ""),
    ("olmo1-sharded-torch-new", "model_and_optim/__1_0.distcp", "model_and_optim/"),
    ("olmo2-sharded-olmo-core", "model/rank_1.safetensors", ""),
]


def _lost_counts(truth: dict, deleted: str, prefix: str) -> dict[str, tuple[str, int, int]]:
    """Return, per tensor with data in ``deleted``, its unit, lost count and axis length."""
    lost: dict[str, tuple[str, int, int]] = {}
    for name, pieces in truth["shards"].items():
        shape = truth["tensors"][name]["shape"]
        for piece in pieces:
            files = [piece["file"]] if "file" in piece else []
            files += [item["file"] for item in piece.get("storage", [])]
            if deleted not in [prefix + file if prefix else file for file in files]:
                continue
            if "flattened_offsets" in piece:
                count = sum(end - start for start, end in piece["flattened_offsets"])
                total = 1
                for size in shape:
                    total *= size
                unit = "elements"
            else:
                count, total, unit = piece["sizes"][0], shape[0], "rows"
            if count:
                previous = lost.get(name, (unit, 0, total))[1]
                lost[name] = (unit, previous + count, total)
    return lost


@pytest.fixture(params=CASES, ids=[case[0] for case in CASES])
def broken_copy(request: pytest.FixtureRequest, fixtures_dir: Path, tmp_path: Path):
    folder, deleted, prefix = request.param
    source = fixtures_dir / folder / "step3"
    copy = tmp_path / folder
    shutil.copytree(source, copy)
    # The fixtures are read-only; the copy's folders must be writable to delete from them.
    for folder_path in [copy, *(path for path in copy.rglob("*") if path.is_dir())]:
        folder_path.chmod(0o755)
    (copy / deleted).unlink()
    truth = json.loads((fixtures_dir / folder / "ground_truth.json").read_text())
    return copy, deleted, _lost_counts(truth, deleted, prefix)


def _tensor_labels(tree: TensorTree) -> dict[str, str]:
    labels = {}
    for node in tree.iter_nodes():
        group = node.data
        if group is not None and group.tensor is not None:
            labels[group.tensor.name] = node.label.plain
    return labels


async def test_missing_file_marks_tensors(broken_copy) -> None:
    copy, _deleted, lost = broken_copy

    app = InspectApp([copy])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        tree = app.screen.query_one(TensorTree)
        for node in list(tree.iter_nodes()):
            node.expand_all()
        await pilot.pause()
        labels = _tensor_labels(tree)
        model_names = {tensor.name for tensor in app.screen.checkpoint.tensors}

    shown_model = {name: label for name, label in labels.items() if name in model_names}
    assert shown_model
    for name, label in shown_model.items():
        assert (MISSING_MARK in label) == (name in lost), label


async def test_missing_file_in_shards_tab(broken_copy) -> None:
    copy, deleted, lost = broken_copy
    name = next(iter(lost))
    unit, count, total = lost[name]

    app = InspectApp([copy])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_load(pilot)
        tree = app.screen.query_one(TensorTree)
        tree.apply_filter(name)
        await pilot.pause()
        await pilot.pause()
        details = static_text(app.screen.query_one(TensorDetails))
        await pilot.press("5")
        await pilot.pause()
        layout = static_text(app.screen.query_one(ShardLayout))
        balance = static_text(app.screen.query_one(RankBalance))
        await pilot.press("4")
        await pilot.pause()
        files = table_rows(app.screen.query_one(FilesTable))

    sentence = f"{format_count(count)} of {format_count(total)} {unit} not available"
    assert sentence in layout
    assert deleted in layout
    assert sentence in details
    assert deleted in details

    deleted_lines = [line for line in balance.splitlines() if deleted in line]
    assert deleted_lines
    assert all("missing" in line for line in deleted_lines)
    assert all("0 Bytes" not in line for line in deleted_lines)

    deleted_rows = [row for row in files if row[0] == deleted]
    assert len(deleted_rows) == 1
    assert deleted_rows[0][3] == "missing"
