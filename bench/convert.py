"""Benchmark OLMo -> Transformers conversion against a plain copy and a load-and-save baseline.

Builds (once, under ``$OLMO_INSPECT_BENCH_CACHE`` or ``~/.cache/olmo-inspect/bench``) an
OLMo-1B-shaped bfloat16 unsharded checkpoint (d_model 2048, 16 layers, 16 heads, fused ff_proj
of 16384 rows, 50304 embedding rows, tied, about 2.35 GB) and times four whole processes,
back to back, median of ``--repeat`` runs:

- ``olmo-inspect convert SRC --to transformers --no-verify`` into a folder that does not exist,
  and the same with verification (the default), reported on its own row;
- the floor: ``cp model.pt`` to a file that does not exist, then ``sync`` of that file (an
  fsync, as the converter does for its outputs; a bare ``sync`` would also time other
  processes' writes);
- the baseline: ``torch.load`` the state dict, split the fused rows, build the transformers
  model, ``load_state_dict`` and ``save_pretrained`` (what a hand-written script does).

Before each timed command its previous output is deleted, the disk is synced and left idle for
``SETTLE_SECONDS`` (all outside the timing), so no command pays for another's writes. Each
process also reports its peak RSS (``ru_maxrss`` of the child). Needs about 10 GB of free disk.
Run by hand: ``python3 bench/convert.py``; never run in the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ENV = "OLMO_INSPECT_BENCH_CACHE"
DEFAULT_CACHE = Path.home() / ".cache" / "olmo-inspect" / "bench"
CHECKPOINT_NAME = "olmo-1b-shaped-bf16"
DEFAULT_REPEAT = 5
# Pause before each timed command, after deleting its previous output and syncing, so that
# the discards and writeback of the commands before it stay out of its timing. An estimate: a
# filesystem mounted with online discard may still be trimming gigabytes when sync returns.
SETTLE_SECONDS = 3

BASELINE_SCRIPT = """
import sys, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM

source, config_dir, output = (Path(arg) for arg in sys.argv[1:4])
state = torch.load(source / "model.pt", weights_only=True, mmap=True)
config = AutoConfig.from_pretrained(config_dir)
d_model, hidden = config.hidden_size, config.intermediate_size
converted = {"model.embed_tokens.weight": state["transformer.wte.weight"]}
for layer in range(config.num_hidden_layers):
    prefix = f"transformer.blocks.{layer}."
    target = f"model.layers.{layer}."
    q, k, v = state[prefix + "att_proj.weight"].split(d_model, dim=0)
    up, gate = state[prefix + "ff_proj.weight"].split(hidden, dim=0)
    converted[target + "self_attn.q_proj.weight"] = q
    converted[target + "self_attn.k_proj.weight"] = k
    converted[target + "self_attn.v_proj.weight"] = v
    converted[target + "self_attn.o_proj.weight"] = state[prefix + "attn_out.weight"]
    converted[target + "mlp.up_proj.weight"] = up
    converted[target + "mlp.gate_proj.weight"] = gate
    converted[target + "mlp.down_proj.weight"] = state[prefix + "ff_out.weight"]
model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.load_state_dict(converted, strict=False)
model.tie_weights()
model.save_pretrained(output)
"""


def cache_folder() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def build_checkpoint(folder: Path) -> Path:
    """Write the OLMo-1B-shaped checkpoint tensor by tensor (never all in memory) once."""
    import yaml

    from olmo_inspect.convert.pt_writer import PtWriter, TensorSlot
    from olmo_inspect.samples.architectures import OlmoShape
    from olmo_inspect.samples.configs import olmo_model_section

    target = folder / CHECKPOINT_NAME
    if (target / "model.pt").is_file():
        return target
    shape = OlmoShape(
        d_model=2048,
        n_heads=16,
        n_kv_heads=None,
        n_layers=16,
        mlp_hidden_size=16384,
        vocab_size=50280,
        embedding_size=50304,
        weight_tying=True,
        parametric_norm=False,
        attention_layer_norm=False,
        norm_after=False,
    )
    shapes = {"transformer.wte.weight": (shape.embedding_size, shape.d_model)}
    for layer in range(shape.n_layers):
        prefix = f"transformer.blocks.{layer}."
        shapes[prefix + "att_proj.weight"] = (3 * shape.d_model, shape.d_model)
        shapes[prefix + "attn_out.weight"] = (shape.d_model, shape.d_model)
        shapes[prefix + "ff_proj.weight"] = (shape.mlp_hidden_size, shape.d_model)
        shapes[prefix + "ff_out.weight"] = (shape.d_model, shape.mlp_hidden_size // 2)

    building = folder / f".{CHECKPOINT_NAME}.building"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    tree = {
        name: TensorSlot(str(index), "bfloat16", size)
        for index, (name, size) in enumerate(shapes.items())
    }
    writer = PtWriter(building / "model.pt", tree)
    generator = torch.Generator().manual_seed(0)
    for index, size in enumerate(shapes.values()):
        value = torch.randn(size, generator=generator, dtype=torch.float32) * 0.02
        writer.write_tensor(str(index), value.to(torch.bfloat16))
    writer.close()
    config = {"model": olmo_model_section(shape)}
    (building / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    os.rename(building, target)
    return target


def measure(command: list[str]) -> tuple[float, int]:
    """Run ``command`` as a child process; return wall seconds and the child's peak RSS (KiB)."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "start = time.monotonic()\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "elapsed = time.monotonic() - start\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(f'{elapsed} {peak} {code}', file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True
    )
    elapsed, peak, code = result.stderr.strip().splitlines()[-1].split()
    if code != "0":
        raise RuntimeError(f"{command[0]} failed with exit code {code}: {result.stderr[-2000:]}")
    return float(elapsed), int(peak)


def settle(output: Path) -> None:
    """Delete a previous output, flush the page cache to disk and let the disk go idle."""
    if output.is_dir():
        shutil.rmtree(output)
    elif output.exists():
        output.unlink()
    subprocess.run(["sync"], check=True)
    time.sleep(SETTLE_SECONDS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs per command")
    args = parser.parse_args()

    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    source = build_checkpoint(folder)
    print(f"checkpoint {source} ready in {time.monotonic() - started:.1f} s")
    work = folder / "outputs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    os.environ["PYTHONPATH"] = str(REPO_ROOT)

    ours_output = work / "ours"
    ours = [
        sys.executable,
        "-m",
        "olmo_inspect.cli",
        "convert",
        str(source),
        "--to",
        "transformers",
        "-o",
        str(ours_output),
        "--no-verify",
        "--force",
        "--json",
    ]
    verified_output = work / "verified"
    verified = [argument for argument in ours if argument != "--no-verify"]
    verified[verified.index(str(ours_output))] = str(verified_output)
    copy = work / "copy.pt"
    floor = ["sh", "-c", f"cp {source / 'model.pt'} {copy} && sync {copy}"]
    baseline = [
        sys.executable,
        "-c",
        BASELINE_SCRIPT,
        str(source),
        str(ours_output),
        str(work / "baseline"),
    ]

    results: dict[str, list[tuple[float, int]]] = {
        "olmo-inspect": [],
        "cp+sync": [],
        "olmo-inspect verify": [],
        "load+save_pretrained": [],
    }
    for _ in range(args.repeat):
        settle(ours_output)
        results["olmo-inspect"].append(measure(ours))
        settle(copy)
        results["cp+sync"].append(measure(floor))
        settle(verified_output)
        results["olmo-inspect verify"].append(measure(verified))
        settle(work / "baseline")
        results["load+save_pretrained"].append(measure(baseline))

    medians = {name: statistics.median(t for t, _ in runs) for name, runs in results.items()}
    for name, runs in results.items():
        peak = max(rss for _, rss in runs) / 1024
        times = ", ".join(f"{t:.2f}" for t, _ in runs)
        print(f"{name:<22} median {medians[name]:7.2f} s  runs [{times}]  peak RSS {peak:.0f} MiB")
    floor_time = medians["cp+sync"]
    print(f"olmo-inspect / cp+sync            = {medians['olmo-inspect'] / floor_time:.2f}")
    print(f"olmo-inspect verify / cp+sync     = {medians['olmo-inspect verify'] / floor_time:.2f}")
    print(
        f"load+save_pretrained / olmo-inspect = "
        f"{medians['load+save_pretrained'] / medians['olmo-inspect']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
