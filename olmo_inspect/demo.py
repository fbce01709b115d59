"""The demo cache: one sample of every kind plus a training-run folder, built once.

``build_demo`` writes into ``$OLMO_INSPECT_CACHE`` (or ``~/.cache/olmo-inspect/demo/<version>``)
the first time and reuses it while the completion marker is there. It builds into a temporary
sibling directory and renames it into place, so an interrupted build never looks complete.
Building imports torch and takes about a minute on two CPU cores.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from olmo_inspect import __version__
from olmo_inspect.errors import InspectError

if TYPE_CHECKING:
    from olmo_inspect.samples import Sample

log = logging.getLogger(__name__)

CACHE_ENV = "OLMO_INSPECT_CACHE"
DEFAULT_CACHE = Path("~/.cache/olmo-inspect/demo")
COMPLETE_MARKER = "demo-complete.json"
SAMPLES_DIR = "samples"
RECORDS_DIR = "records"
RUN_DIR = "run"
RUN_SHARDED_SAMPLE = "olmo1-sharded-torch-legacy"
RUN_UNSHARDED_SAMPLE = "olmo1-unsharded"
RUN_STEPS = ("step2", "step3")
RUN_UNSHARDED_STEP = "step3-unsharded"
RUN_LATEST = "latest"
RUN_LATEST_UNSHARDED = "latest-unsharded"


class DemoBuildError(InspectError):
    """The demo cache could not be built."""


def demo_cache_dir(cache_dir: Path | None = None) -> Path:
    """Return the demo folder: ``cache_dir``, ``$OLMO_INSPECT_CACHE`` or the per-version default."""
    if cache_dir is not None:
        return Path(cache_dir)
    from_env = os.environ.get(CACHE_ENV)
    if from_env:
        return Path(from_env)
    return DEFAULT_CACHE.expanduser() / __version__


def _build_into(root: Path) -> None:
    from olmo_inspect.samples import SAMPLE_NAMES, build_sample
    from olmo_inspect.samples.sample import save_sample_record

    records = root / RECORDS_DIR
    records.mkdir(parents=True)
    for name in SAMPLE_NAMES:
        sample = build_sample(name, root / SAMPLES_DIR / name)
        save_sample_record(sample, records / f"{name}.pt")

    run = root / RUN_DIR
    for step in RUN_STEPS:
        build_sample(RUN_SHARDED_SAMPLE, run / step)
    build_sample(RUN_UNSHARDED_SAMPLE, run / RUN_UNSHARDED_STEP)
    (run / RUN_LATEST).symlink_to(RUN_STEPS[-1])
    (run / RUN_LATEST_UNSHARDED).symlink_to(RUN_UNSHARDED_STEP)


def _load_samples(root: Path) -> list[Sample]:
    from olmo_inspect.samples import SAMPLE_NAMES
    from olmo_inspect.samples.sample import load_sample_record

    marker = json.loads((root / COMPLETE_MARKER).read_text())
    log.debug("reusing demo cache %s built by version %s", root, marker.get("version"))
    return [
        load_sample_record(root / RECORDS_DIR / f"{name}.pt", root / SAMPLES_DIR / name)
        for name in SAMPLE_NAMES
    ]


def is_built(cache_dir: Path | None = None) -> bool:
    """Return True when the demo folder is complete, so opening it builds nothing."""
    return (demo_cache_dir(cache_dir) / COMPLETE_MARKER).is_file()


def demo_paths(cache_dir: Path | None = None) -> list[Path]:
    """Build the demo folder if needed and return its checkpoints, then its run folder.

    Unlike :func:`build_demo` it loads no tensors, so reopening the demo does not import torch.
    """
    root = demo_cache_dir(cache_dir)
    if not is_built(cache_dir):
        build_demo(cache_dir)
    names = json.loads((root / COMPLETE_MARKER).read_text()).get("samples")
    if not isinstance(names, list):
        from olmo_inspect.samples import SAMPLE_NAMES

        names = list(SAMPLE_NAMES)
    return [*(root / SAMPLES_DIR / str(name) for name in names), root / RUN_DIR]


def build_demo(cache_dir: Path | None = None) -> list[Sample]:
    """Build (or reuse) the demo folder and return its samples, one per ``SAMPLE_NAMES`` entry.

    The run folder ``<cache>/run`` contains ``step2``, ``step3``, ``step3-unsharded`` and the
    ``latest`` and ``latest-unsharded`` links an OLMo training run leaves.

    Raises:
        DemoBuildError: when the cache folder cannot be created or a sample fails to build.
    """
    root = demo_cache_dir(cache_dir)
    if (root / COMPLETE_MARKER).is_file():
        return _load_samples(root)

    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    except OSError as error:
        raise DemoBuildError(
            f"{root}: cannot create the demo cache ({error.strerror}); "
            f"set {CACHE_ENV} to a writable folder"
        ) from error

    try:
        log.info("building the demo checkpoints into %s", root)
        _build_into(staging)
        from olmo_inspect.samples import SAMPLE_NAMES

        marker = {"version": __version__, "samples": list(SAMPLE_NAMES)}
        (staging / COMPLETE_MARKER).write_text(json.dumps(marker) + "\n")
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _load_samples(root)
