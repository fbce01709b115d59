"""Check the conversion engine on a GPU: convert with ``--device cuda`` and verify.

A cast (``--dtype bfloat16``) forces every tensor to be materialised, so the work runs on the
GPU rather than as byte copies. The script builds a small sample, converts it to Transformers
on ``cuda`` and on ``cpu``, checks that both outputs verify and hold identical bytes, and
prints the timings. It exits non-zero on any failure.

Run on a machine with a GPU: ``python3 bench/gpu_convert_check.py``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def digest(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.glob("*.safetensors"))
    }


def convert(source: Path, output: Path, device: str) -> float:
    command = [
        str(Path(sys.executable).with_name("olmo-inspect")),
        "convert",
        str(source),
        "--to",
        "transformers",
        "-o",
        str(output),
        "--dtype",
        "bfloat16",
        "--device",
        device,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device visible to torch; run this on a GPU machine", file=sys.stderr)
        return 1
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")

    from olmo_inspect.samples import build_sample

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        sample = build_sample("olmo2-unsharded-safetensors", root / "source")
        seconds_gpu = convert(sample.path, root / "out-cuda", "cuda")
        seconds_cpu = convert(sample.path, root / "out-cpu", "cpu")
        same = digest(root / "out-cuda") == digest(root / "out-cpu")
    print(f"cuda: {seconds_gpu:.2f} s, cpu: {seconds_cpu:.2f} s, identical outputs: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
