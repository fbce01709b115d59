"""Benchmark OLMo -> Transformers conversion against a plain copy and a load-and-save baseline.

Uses the OLMo-1B-shaped bfloat16 unsharded checkpoint of ``harness.build_olmo_1b`` (built once
under ``$OLMO_INSPECT_BENCH_CACHE`` or ``~/.cache/olmo-inspect/bench``, about 2.35 GB) and times
five whole processes, back to back, median of ``--repeat`` runs:

- ``olmo-inspect convert SRC --to transformers --no-verify`` into a folder that does not exist,
  and the same with verification (the default), reported on its own row;
- the floor: ``cp model.pt`` to a file that does not exist, then ``sync`` of that file (an
  fsync, as the converter does for its outputs; a bare ``sync`` would also time other
  processes' writes);
- the verify floor: ``cat`` of every source file and every file of the verified output to
  ``/dev/null``, which reads both sides once as verification must;
- the baseline: ``torch.load`` the state dict, split the fused rows, build the transformers
  model, ``load_state_dict`` and ``save_pretrained`` (what a hand-written script does).

Before each timed command its previous output is deleted, the disk is synced and left idle for
``SETTLE_SECONDS`` (all outside the timing), so no command pays for another's writes. Each
command's peak RSS comes from GNU time (``harness.run_process``). Needs about 10 GB of free
disk. Run by hand: ``python3 bench/convert.py``; never run in the test suite.
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

from harness import Run, build_olmo_1b, cache_dir, run_process

REPO_ROOT = Path(__file__).resolve().parents[1]
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


def settle(output: Path | None) -> None:
    """Delete a previous output (if any), flush the page cache to disk and let the disk go idle."""
    if output is None:
        pass
    elif output.is_dir():
        shutil.rmtree(output)
    elif output.exists():
        output.unlink()
    subprocess.run(["sync"], check=True)
    time.sleep(SETTLE_SECONDS)


def measure(command: list[str]) -> Run:
    """Run ``command`` once with GNU time; raises RuntimeError unless it exits with 0."""
    return run_process(command, accepted_codes=(0,))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs per command")
    args = parser.parse_args()

    started = time.monotonic()
    source = build_olmo_1b()
    print(f"checkpoint {source} ready in {time.monotonic() - started:.1f} s")
    work = cache_dir() / "outputs"
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
    # Runs right after the verified conversion, while its output exists.
    read_both = [
        "sh",
        "-c",
        f"find {source} {verified_output} -type f -exec cat {{}} + > /dev/null",
    ]
    baseline = [
        sys.executable,
        "-c",
        BASELINE_SCRIPT,
        str(source),
        str(ours_output),
        str(work / "baseline"),
    ]

    results: dict[str, list[Run]] = {
        "olmo-inspect": [],
        "cp+sync": [],
        "olmo-inspect verify": [],
        "cat source+output": [],
        "load+save_pretrained": [],
    }
    for _ in range(args.repeat):
        settle(ours_output)
        results["olmo-inspect"].append(measure(ours))
        settle(copy)
        results["cp+sync"].append(measure(floor))
        settle(verified_output)
        results["olmo-inspect verify"].append(measure(verified))
        settle(None)
        results["cat source+output"].append(measure(read_both))
        settle(work / "baseline")
        results["load+save_pretrained"].append(measure(baseline))

    print_results(results)
    return 0


def print_results(results: dict[str, list[Run]]) -> None:
    """Print each command's runs, median and peak RSS, then the ratios between them."""
    medians = {
        name: statistics.median(run.seconds for run in runs) for name, runs in results.items()
    }
    for name, runs in results.items():
        peak = max(run.peak_rss for run in runs) / 2**20
        times = ", ".join(f"{run.seconds:.2f}" for run in runs)
        print(f"{name:<22} median {medians[name]:7.2f} s  runs [{times}]  peak RSS {peak:.0f} MiB")

    floor_time = medians["cp+sync"]
    read_time = medians["cat source+output"]
    # Verification alone, estimated as the difference of two medians.
    verify_time = medians["olmo-inspect verify"] - medians["olmo-inspect"]
    print(
        f"olmo-inspect / cp+sync                     = {medians['olmo-inspect'] / floor_time:.2f}"
    )
    print(
        f"olmo-inspect verify / cp+sync              = "
        f"{medians['olmo-inspect verify'] / floor_time:.2f}"
    )
    print(f"verify alone (estimate)                    = {verify_time:.2f} s")
    print(f"verify alone / cat source+output           = {verify_time / read_time:.2f}")
    print(
        f"load+save_pretrained / olmo-inspect        = "
        f"{medians['load+save_pretrained'] / medians['olmo-inspect']:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
