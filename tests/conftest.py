"""Session fixtures shared by every test: sample checkpoints and the upstream fixtures folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES_ENV = "OLMO_INSPECT_FIXTURES"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = REPO_ROOT / ".." / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Return the folder of checkpoints written by upstream OLMo, or skip when it is absent."""
    folder = Path(os.environ.get(FIXTURES_ENV) or DEFAULT_FIXTURES).resolve()
    if not folder.is_dir():
        pytest.skip(f"upstream fixtures not found at {folder}; set {FIXTURES_ENV} to their folder")
    return folder


@pytest.fixture(scope="session")
def sample_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., object]:
    """Return ``build(name, **options) -> Sample``, building each combination once a session.

    Tests must not modify the returned directories: other tests share them.
    """
    from olmo_inspect.samples import build_sample

    built: dict[tuple[str, tuple[tuple[str, object], ...]], object] = {}

    def build(name: str, **options: object) -> object:
        key = (name, tuple(sorted(options.items())))
        if key not in built:
            suffix = "-".join(f"{option}{value}" for option, value in key[1])
            folder = tmp_path_factory.mktemp("samples") / (f"{name}-{suffix}" if suffix else name)
            built[key] = build_sample(name, folder, **options)
        return built[key]

    return build
