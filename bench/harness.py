"""Shared pieces of the benchmarks: the OLMo-1B-shaped checkpoint and whole-process timing.

Benchmarks time whole processes (exec to exit) with a warm page cache, take the median of
several runs, and report each command's own peak RSS as GNU time measures it. They are run by hand,
never as tests.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "OLMO_INSPECT_BENCH_CACHE"
GNU_TIME = "/usr/bin/time"
DEFAULT_CACHE = Path.home() / ".cache" / "olmo-inspect" / "bench"

# OLMo-1B (allenai/OLMo-1B): 16 layers, d_model 2048, 16 heads, fused ff_proj of 16384 rows,
# embedding padded to 50304 rows, tied weights. In bfloat16 that is about 2.35 GB.
OLMO_1B = {
    "d_model": 2048,
    "n_heads": 16,
    "n_kv_heads": None,
    "n_layers": 16,
    "mlp_hidden_size": 16384,
    "vocab_size": 50280,
    "embedding_size": 50304,
    "weight_tying": True,
    "parametric_norm": False,
    "attention_layer_norm": False,
    "norm_after": False,
}


def cache_dir() -> Path:
    folder = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def build_olmo_1b(dtype: str = "bfloat16") -> Path:
    """Write (once) an unsharded OLMo checkpoint with OLMo-1B shapes and return its folder.

    The values are random; only shapes, dtype and the file layout matter for the benchmarks.
    """
    import torch

    from olmo_inspect.samples.architectures import OlmoShape
    from olmo_inspect.samples.configs import olmo_train_config
    from olmo_inspect.samples.unsharded import write_olmo_unsharded

    folder = cache_dir() / f"olmo-1b-{dtype}"
    marker = folder / ".complete"
    if marker.exists():
        return folder

    shape = OlmoShape(**OLMO_1B)
    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(0)

    def weight(rows: int, columns: int) -> torch.Tensor:
        return (torch.randn(rows, columns, generator=generator) * 0.02).to(torch_dtype)

    d_model, hidden = shape.d_model, shape.mlp_hidden_size
    state: dict[str, torch.Tensor] = {
        "transformer.wte.weight": weight(shape.embedding_size, d_model)
    }
    for layer in range(shape.n_layers):
        prefix = f"transformer.blocks.{layer}"
        state[f"{prefix}.att_proj.weight"] = weight(3 * d_model, d_model)
        state[f"{prefix}.attn_out.weight"] = weight(d_model, d_model)
        state[f"{prefix}.ff_proj.weight"] = weight(hidden, d_model)
        state[f"{prefix}.ff_out.weight"] = weight(d_model, hidden // 2)

    config = olmo_train_config(shape, run_name="olmo-1b-bench", save_folder=str(folder))
    write_olmo_unsharded(folder, state, config)
    marker.write_text("done\n")
    return folder


@dataclass
class Run:
    """One whole-process run: wall seconds and the child's peak RSS in bytes."""

    seconds: float
    peak_rss: int


def run_process(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    accepted_codes: tuple[int, ...] = (0, 1),
) -> Run:
    """Run ``command`` to completion with its output discarded.

    Raises RuntimeError when the exit code is not in ``accepted_codes``. The default also
    accepts 1, the CLI's exit code for an invalid or incomplete checkpoint, which the open
    benchmarks time as well.

    The peak RSS comes from GNU time, which forks the command from its own small process;
    a child forked from this (possibly large) Python process would inherit its high-water mark.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        process = subprocess.run(
            [GNU_TIME, "--format", "%M", "--output", report.name, *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
        )
        seconds = time.perf_counter() - start
        lines = [line for line in report.read().splitlines() if line.strip()]
    if process.returncode not in accepted_codes:
        raise RuntimeError(
            f"{command[:3]} exited with {process.returncode}: {process.stderr.decode()[-400:]}"
        )
    # GNU time reports %M in kilobytes.
    return Run(seconds=seconds, peak_rss=int(lines[-1]) * 1024)


@dataclass
class Measurement:
    label: str
    runs: list[Run]

    @property
    def median_seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def median_rss(self) -> int:
        return int(statistics.median(run.peak_rss for run in self.runs))


def measure(label: str, command: list[str], repeats: int, warmup: int = 1) -> Measurement:
    """Run ``command`` ``warmup`` times to warm the page cache, then ``repeats`` times measured."""
    for _ in range(warmup):
        run_process(command)
    runs = [run_process(command) for _ in range(repeats)]
    return Measurement(label, runs)


def python_command(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def format_table(measurements: list[Measurement], baseline: Measurement) -> str:
    lines = [
        f"| {'command':<44} | median s | peak RSS MB | time vs {baseline.label} |",
        f"|{'-' * 46}|----------|-------------|{'-' * (len(baseline.label) + 10)}|",
    ]
    for item in measurements:
        ratio = item.median_seconds / baseline.median_seconds
        lines.append(
            f"| {item.label:<44} | {item.median_seconds:8.3f} | "
            f"{item.median_rss / 1e6:11.1f} | {ratio:>{len(baseline.label) + 8}.2f}x |"
        )
    return "\n".join(lines)
