"""The demo cache builds once, contains a run folder, and is reused on the next call."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from olmo_inspect.demo import COMPLETE_MARKER, build_demo
from olmo_inspect.samples import SAMPLE_NAMES


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """Build the demo cache once for this module (it takes about a minute)."""
    cache = tmp_path_factory.mktemp("demo-parent") / "demo"
    return cache, build_demo(cache)


def test_demo_builds_and_reuses(demo_build) -> None:
    cache, first = demo_build

    marker_time = (cache / COMPLETE_MARKER).stat().st_mtime_ns
    second = build_demo(cache)

    assert [sample.name for sample in first] == list(SAMPLE_NAMES)
    assert [sample.name for sample in second] == list(SAMPLE_NAMES)
    assert (cache / COMPLETE_MARKER).stat().st_mtime_ns == marker_time
    for built, reused in zip(first, second, strict=True):
        assert reused.path == built.path
        assert reused.kind == built.kind
        assert sorted(reused.tensors) == sorted(built.tensors)
        for name, tensor in built.tensors.items():
            assert torch.equal(reused.tensors[name], tensor), name
    assert sorted(p.name for p in cache.parent.iterdir()) == ["demo"]


def test_demo_run_folder_layout(demo_build) -> None:
    cache, _ = demo_build

    run = cache / "run"

    assert (run / "latest").is_symlink()
    assert (run / "latest").readlink() == Path("step3")
    assert (run / "latest-unsharded").readlink() == Path("step3-unsharded")
    for step in ("step2", "step3"):
        assert (run / step / "rank0.pt").is_file()
    assert (run / "step3-unsharded" / "model.pt").is_file()
