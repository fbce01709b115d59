"""Benchmark: time to inspect an OLMo-1B-shaped checkpoint, against loading it with torch.

Compares, as whole processes with a warm page cache (median of 5):
``olmo-inspect PATH --json``, a process that runs ``torch.load(mmap=True, weights_only=True)``,
a full ``torch.load``, and ``olmo-inspect --json`` on a 3 MB checkpoint of the same kind.

Run: ``python bench/open_time.py`` (the first run writes a 2.35 GB checkpoint to the cache,
``$OLMO_INSPECT_BENCH_CACHE`` or ``~/.cache/olmo-inspect/bench``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import build_olmo_1b, cache_dir, format_table, measure, python_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    large = build_olmo_1b("bfloat16")
    small = cache_dir() / "olmo1-small"
    if not (small / "model.pt").exists():
        from olmo_inspect.samples import build_sample

        shutil.rmtree(small, ignore_errors=True)
        build_sample("olmo1-unsharded", small)

    # The console script next to this interpreter, not a version-manager shim that adds startup.
    inspect = str(Path(sys.executable).with_name("olmo-inspect"))
    model_pt = large / "model.pt"
    size_gb = model_pt.stat().st_size / 1e9
    small_mb = sum(p.stat().st_size for p in small.iterdir()) / 1e6
    print(f"large checkpoint: {large} ({size_gb:.2f} GB model.pt)")
    print(f"small checkpoint: {small} ({small_mb:.1f} MB)")

    inspect_large = measure(
        "olmo-inspect --json (2.35 GB)", [inspect, str(large), "--json"], args.repeats
    )
    inspect_small = measure(
        f"olmo-inspect --json ({small_mb:.0f} MB)", [inspect, str(small), "--json"], args.repeats
    )
    mmap_load = measure(
        "torch.load(mmap=True, weights_only=True)",
        python_command(
            f"import torch; torch.load({str(model_pt)!r}, mmap=True, weights_only=True)"
        ),
        args.repeats,
    )
    full_load = measure(
        "torch.load(weights_only=True)",
        python_command(f"import torch; torch.load({str(model_pt)!r}, weights_only=True)"),
        args.repeats,
    )
    print(format_table([inspect_large, inspect_small, mmap_load, full_load], inspect_large))
    print(
        f"mmap load / inspect: {mmap_load.median_seconds / inspect_large.median_seconds:.1f}x; "
        f"large / small inspect: {inspect_large.median_seconds / inspect_small.median_seconds:.2f}x"
    )


if __name__ == "__main__":
    main()
