"""Every sample builds, has the upstream layout, and reads back equal to what the writer held."""

from __future__ import annotations

import base64
import io
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors import safe_open

from olmo_inspect.model import CheckpointKind
from olmo_inspect.samples import SAMPLE_NAMES, build_sample, encode_key
from olmo_inspect.samples.distributed import run_ranks

FSDP_PREFIX = "_fsdp_wrapped_module."
TRAIN_STATE_GLOBALS = {
    "numpy.ndarray",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "numpy.dtype",
    "pathlib.PosixPath",
}

EXPECTED_FILES: dict[str, list[str]] = {
    "olmo1-unsharded": ["config.yaml", "model.pt", "optim.pt", "train.pt"],
    "olmo2-unsharded-safetensors": [
        "config.yaml",
        "model.safetensors",
        "optim.safetensors",
        "train.pt",
    ],
    "olmo-core-unsharded": ["config.json", "model.safetensors", "optim.pt"],
    "transformers-olmo": ["config.json", "model.safetensors"],
    "transformers-olmo2": ["config.json", "model.safetensors"],
    "transformers-olmo3": ["config.json", "model.safetensors"],
    "transformers-olmoe": ["config.json", "model.safetensors"],
    "transformers-olmo2-sharded": ["config.json", "model.safetensors.index.json"],
    "transformers-olmo2-bin": ["config.json", "pytorch_model.bin"],
    "transformers-olmo2-bin-sharded": ["config.json", "pytorch_model.bin.index.json"],
    "hf-olmo": ["config.json", "pytorch_model.bin"],
    "olmo1-sharded-torch-legacy": ["config.yaml", "rank0.pt", "rank1.pt"],
    "olmo1-sharded-torch-new": [
        "config.yaml",
        "model_and_optim/.metadata",
        "model_and_optim/__0_0.distcp",
        "model_and_optim/__1_0.distcp",
        "train/rank0.pt",
        "train/rank1.pt",
    ],
    "olmo2-sharded-local": [
        "config.yaml",
        "metadata.yaml",
        "model/rank0.pt",
        "model/rank1.pt",
        "optim/rank0.pt",
        "optim/rank1.pt",
        "train/rank0.pt",
        "train/rank1.pt",
    ],
    "olmo2-sharded-olmo-core": [
        "config.yaml",
        "model/metadata.json",
        "model/rank_0.safetensors",
        "model/rank_1.safetensors",
        "optim/metadata.json",
        "optim/rank_0.safetensors",
        "optim/rank_1.safetensors",
        "train/rank0.pt",
        "train/rank1.pt",
    ],
    "olmo-core-dcp": [
        "config.json",
        ".metadata.json",
        "model_and_optim/.metadata",
        "train/rank0.pt",
        "train/rank1.pt",
    ],
}
MAX_SAMPLE_BYTES = 2 * 1024 * 1024


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickle plain data only; any class or function reference is an error."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")


def _plain_unpickle(data: bytes) -> Any:
    return _NoGlobalsUnpickler(io.BytesIO(data)).load()


def _assert_same_tensors(
    actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> None:
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert actual[name].shape == tensor.shape, name
        assert torch.equal(actual[name], tensor), name


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def _ddp_optimizer_tensors(state: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    names: dict[int, str] = {}
    for group in state["param_groups"]:
        for index, name in zip(group["params"], group["param_names"], strict=True):
            names[index] = name.removeprefix(prefix)
    return {
        f"{names[index]}.{key}": value
        for index, entry in state["state"].items()
        for key, value in entry.items()
    }


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_files_and_size(sample_factory, name: str) -> None:
    sample = sample_factory(name)

    assert sample.name == name
    assert sample.path.is_dir()
    for relative in EXPECTED_FILES[name]:
        assert (sample.path / relative).is_file(), relative
    total = sum(path.stat().st_size for path in sample.path.rglob("*") if path.is_file())
    assert total < MAX_SAMPLE_BYTES
    assert sample.tensors


@pytest.mark.parametrize(
    "name",
    [
        "olmo1-unsharded",
        "olmo2-unsharded-safetensors",
        "olmo1-sharded-torch-new",
        "olmo2-sharded-local",
        "olmo2-sharded-olmo-core",
        "olmo-core-dcp",
    ],
)
def test_train_state_globals_allowed(sample_factory, name: str) -> None:
    sample = sample_factory(name)
    train_file = sample.path / ("train.pt" if "unsharded" in name else "train/rank0.pt")

    found = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(train_file)))

    assert found <= TRAIN_STATE_GLOBALS
    assert sample.train_state is not None
    assert sample.train_state["global_step"] == 3
    assert sample.train_state["world_size"] == (sample.world_size or 2)


def test_olmo1_unsharded_reads_back(sample_factory) -> None:
    sample = sample_factory("olmo1-unsharded")

    model = torch.load(sample.path / "model.pt", weights_only=True)
    optim = torch.load(sample.path / "optim.pt", weights_only=True)

    _assert_same_tensors(model, sample.tensors)
    assert "transformer.ff_out.weight" not in model
    assert not any("norm" in name for name in model)
    assert all(isinstance(index, int) for index in optim["state"])
    assert optim["param_groups"][0]["param_names"][0].startswith("module.transformer.")
    _assert_same_tensors(_ddp_optimizer_tensors(optim, "module."), sample.optimizer_tensors)
    assert sample.config["model"]["block_type"] == "sequential"
    assert sample.config["model"]["weight_tying"] is True


def test_olmo2_encoded_safetensors_reads_back(sample_factory) -> None:
    sample = sample_factory("olmo2-unsharded-safetensors")

    stored = _read_safetensors(sample.path / "model.safetensors")
    decoded: dict[str, torch.Tensor] = {}
    for key, tensor in stored.items():
        keys, value_is_pickled = _plain_unpickle(base64.urlsafe_b64decode(key))
        assert value_is_pickled is False
        assert len(keys) == 1
        decoded[keys[0]] = tensor
        assert sample.stored_keys[keys[0]] == key

    _assert_same_tensors(decoded, sample.tensors)
    assert "transformer.ff_out.weight" in decoded
    assert "transformer.blocks.0.q_norm.weight" in decoded


def test_olmo2_encoded_optimizer_reads_back(sample_factory) -> None:
    sample = sample_factory("olmo2-unsharded-safetensors")

    stored = _read_safetensors(sample.path / "optim.safetensors")
    state: dict[int, dict[str, torch.Tensor]] = {}
    param_groups: list[dict[str, Any]] = []
    for key, tensor in stored.items():
        keys, value_is_pickled = _plain_unpickle(base64.urlsafe_b64decode(key))
        if value_is_pickled:
            assert keys == ("param_groups",)
            assert tensor.dtype == torch.uint8
            param_groups = _plain_unpickle(bytes(tensor.tolist()))
            continue
        section, index, state_key = keys
        assert section == "state"
        assert isinstance(index, int)
        state.setdefault(index, {})[state_key] = tensor

    rebuilt = {"state": state, "param_groups": param_groups}
    _assert_same_tensors(_ddp_optimizer_tensors(rebuilt, "module."), sample.optimizer_tensors)


def test_olmo_core_unsharded_reads_back(sample_factory) -> None:
    sample = sample_factory("olmo-core-unsharded")

    model = _read_safetensors(sample.path / "model.safetensors")
    optim = torch.load(sample.path / "optim.pt", weights_only=True)
    config = json.loads((sample.path / "config.json").read_text())

    _assert_same_tensors(model, sample.tensors)
    assert "lm_head.norm.weight" in model
    assert "blocks.1.feed_forward.w3.weight" in model
    flat = {
        f"{name}.{key}": value
        for name, entry in optim["state"].items()
        for key, value in entry.items()
    }
    _assert_same_tensors(flat, sample.optimizer_tensors)
    assert "model_type" not in config
    assert "sequence_mixer" in config["model"]["block"]


def test_olmo_core_names_match_upstream(sample_factory, fixtures_dir: Path) -> None:
    sample = sample_factory("olmo-core-unsharded")
    truth = json.loads((fixtures_dir / "olmo-core3-train" / "ground_truth.json").read_text())

    assert sorted(sample.tensors) == sorted(truth["tensors"])


@pytest.mark.parametrize(
    ("name", "fixture"),
    [
        ("olmo1-unsharded", "olmo1-unsharded-ddp"),
        ("olmo2-sharded-local", "olmo2-sharded-local"),
    ],
)
def test_olmo_names_match_upstream(sample_factory, fixtures_dir: Path, name, fixture) -> None:
    sample = sample_factory(name)
    truth = json.loads((fixtures_dir / fixture / "ground_truth.json").read_text())

    assert sorted(sample.tensors) == sorted(truth["tensors"])


@pytest.mark.parametrize(
    "name",
    [
        "transformers-olmo",
        "transformers-olmo2",
        "transformers-olmo3",
        "transformers-olmo2-sharded",
        "transformers-olmo2-bin",
        "transformers-olmo2-bin-sharded",
    ],
)
def test_transformers_sample_loads(sample_factory, name: str) -> None:
    from transformers import AutoModelForCausalLM

    sample = sample_factory(name)

    model = AutoModelForCausalLM.from_pretrained(sample.path)
    loaded = model.state_dict()

    for key, tensor in sample.tensors.items():
        assert torch.equal(loaded[key], tensor), key
    assert sample.config["model_type"] in {"olmo", "olmo2", "olmo3"}


def test_transformers_olmo_tied_has_no_lm_head(sample_factory) -> None:
    sample = sample_factory("transformers-olmo")

    assert sample.config["tie_word_embeddings"] is True
    assert "lm_head.weight" not in sample.tensors


def test_transformers_olmoe_per_expert_names(sample_factory) -> None:
    sample = sample_factory("transformers-olmoe")

    on_disk = _read_safetensors(sample.path / "model.safetensors")

    _assert_same_tensors(on_disk, sample.tensors)
    assert "model.layers.0.mlp.experts.0.gate_proj.weight" in on_disk
    assert not any(key.endswith("experts.gate_up_proj") for key in on_disk)


@pytest.mark.parametrize(
    ("name", "index_file"),
    [
        ("transformers-olmo2-sharded", "model.safetensors.index.json"),
        ("transformers-olmo2-bin-sharded", "pytorch_model.bin.index.json"),
    ],
)
def test_transformers_index_matches_shards(sample_factory, name: str, index_file: str) -> None:
    sample = sample_factory(name)

    index = json.loads((sample.path / index_file).read_text())
    files = set(index["weight_map"].values())

    assert len(files) >= 3
    assert sorted(index["weight_map"]) == sorted(sample.tensors)
    for file_name in files:
        assert (sample.path / file_name).is_file()
    expected_size = sum(t.numel() * t.element_size() for t in sample.tensors.values())
    assert index["metadata"]["total_size"] == expected_size


def test_transformers_bin_sharded_reads_back(sample_factory) -> None:
    sample = sample_factory("transformers-olmo2-bin-sharded")

    loaded: dict[str, torch.Tensor] = {}
    for path in sorted(sample.path.glob("pytorch_model-*-of-*.bin")):
        loaded.update(torch.load(path, weights_only=True))

    _assert_same_tensors(loaded, sample.tensors)


def test_hf_olmo_reads_back(sample_factory) -> None:
    sample = sample_factory("hf-olmo")

    weights = torch.load(sample.path / "pytorch_model.bin", weights_only=True)

    _assert_same_tensors(weights, sample.tensors)
    assert all(key.startswith("model.transformer.") for key in weights)
    assert sample.config["model_type"] == "hf_olmo"
    assert sample.kind is CheckpointKind.HF_OLMO


def _dcp_read(path: Path, targets: dict[str, Any]) -> dict[str, Any]:
    dcp.load(targets, checkpoint_id=str(path), no_dist=True)
    return targets


def _empty_like(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: torch.zeros_like(tensor) for name, tensor in tensors.items()}


def test_torch_new_dcp_reads_back(sample_factory) -> None:
    sample = sample_factory("olmo1-sharded-torch-new")
    optim_targets: dict[str, dict[str, torch.Tensor]] = {}
    for flat_name, tensor in sample.optimizer_tensors.items():
        param, key = flat_name.rsplit(".", 1)
        optim_targets.setdefault(param, {})[key] = torch.zeros_like(tensor)
    targets = {"model": _empty_like(sample.tensors), "optim": {"state": optim_targets}}

    loaded = _dcp_read(sample.path / "model_and_optim", targets)

    _assert_same_tensors(loaded["model"], sample.tensors)
    flat = {
        f"{param}.{key}": value
        for param, entry in loaded["optim"]["state"].items()
        for key, value in entry.items()
    }
    _assert_same_tensors(flat, sample.optimizer_tensors)
    assert sample.stored_keys["transformer.wte.weight"] == "model.transformer.wte.weight"


def test_olmo_core_dcp_reads_back(sample_factory) -> None:
    sample = sample_factory("olmo-core-dcp")
    optim_targets = {
        f"state.{name}": torch.zeros_like(tensor)
        for name, tensor in sample.optimizer_tensors.items()
    }
    targets = {"model": _empty_like(sample.tensors), "optim": optim_targets}

    loaded = _dcp_read(sample.path / "model_and_optim", targets)

    _assert_same_tensors(loaded["model"], sample.tensors)
    flat = {key.removeprefix("state."): value for key, value in loaded["optim"].items()}
    _assert_same_tensors(flat, sample.optimizer_tensors)


def test_olmo_core_dcp_several_files_per_rank(sample_factory) -> None:
    sample = sample_factory("olmo-core-dcp")

    files = sorted(p.name for p in (sample.path / "model_and_optim").glob("*.distcp"))
    ranks = {name.split("_")[2] for name in files}

    assert ranks == {"0", "1"}
    assert len(files) > len(ranks)
    metadata = json.loads((sample.path / ".metadata.json").read_text())
    assert metadata["ephemeral"] is False


def test_torch_new_world_size_three(sample_factory) -> None:
    sample = sample_factory("olmo1-sharded-torch-new", world_size=3)

    files = sorted(p.name for p in (sample.path / "model_and_optim").glob("*.distcp"))
    loaded = _dcp_read(sample.path / "model_and_optim", {"model": _empty_like(sample.tensors)})

    assert files == ["__0_0.distcp", "__1_0.distcp", "__2_0.distcp"]
    assert sample.world_size == 3
    _assert_same_tensors(loaded["model"], sample.tensors)


def _collect_legacy_rank(rank: int, world_size: int, job: tuple[Path, Path]) -> None:
    checkpoint, out = job
    # Our own sample file: the trusted writer is this test session.
    state = torch.load(checkpoint / f"rank{rank}.pt", weights_only=False)
    pieces: dict[str, list[tuple[list[int], torch.Tensor]]] = {}
    for name, value in state["model"].items():
        pieces[name] = [(s.metadata.shard_offsets, s.tensor) for s in value.local_shards()]
    for name, entry in state["optim"]["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and not hasattr(value, "local_shards"):
                pieces[f"{name}.{key}"] = [([], value)]
                continue
            shards = value.local_shards()
            pieces[f"{name}.{key}"] = [(s.metadata.shard_offsets, s.tensor) for s in shards]
    scalars = {key: state[key] for key in ("global_step", "world_size")}
    torch.save({"pieces": pieces, "scalars": scalars}, out / f"rank{rank}.pt")


def _assemble(
    pieces_per_rank: list[dict[str, Any]], expected: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    rebuilt = _empty_like(expected)
    for pieces in pieces_per_rank:
        for name in expected:
            for offsets, tensor in pieces[name]:
                if not offsets:
                    rebuilt[name] = tensor
                    continue
                region = rebuilt[name]
                for dim, (start, size) in enumerate(zip(offsets, tensor.shape, strict=True)):
                    region = region.narrow(dim, start, size)
                region.copy_(tensor)
    return rebuilt


def test_torch_legacy_reads_back(sample_factory, tmp_path: Path) -> None:
    sample = sample_factory("olmo1-sharded-torch-legacy")

    run_ranks(_collect_legacy_rank, 2, (sample.path, tmp_path))
    per_rank = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]

    assert per_rank[0]["scalars"] == {"global_step": 3, "world_size": 2}
    model = _assemble([r["pieces"] for r in per_rank], sample.tensors)
    _assert_same_tensors(model, sample.tensors)
    optim = _assemble([r["pieces"] for r in per_rank], sample.optimizer_tensors)
    _assert_same_tensors(optim, sample.optimizer_tensors)


def test_torch_legacy_world_size_three(sample_factory) -> None:
    sample = sample_factory("olmo1-sharded-torch-legacy", world_size=3)

    files = sorted(p.name for p in sample.path.glob("rank*.pt"))

    assert files == ["rank0.pt", "rank1.pt", "rank2.pt"]
    assert sample.world_size == 3
    found = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(sample.path / files[0])))
    assert "torch.distributed._shard.sharded_tensor.api.ShardedTensor" in found


def _unflatten_local(module_name: str, fqn: str) -> str:
    prefix = module_name.replace(FSDP_PREFIX, "")
    return f"{prefix}.{fqn}" if prefix else fqn


def test_local_flat_params_read_back(sample_factory) -> None:
    from torch.distributed.fsdp._flat_param import _ShardParamInfo

    sample = sample_factory("olmo2-sharded-local")
    flat = {name: torch.zeros(t.numel(), dtype=t.dtype) for name, t in sample.tensors.items()}
    covered = dict.fromkeys(sample.tensors, 0)

    for rank in range(2):
        with torch.serialization.safe_globals([_ShardParamInfo]):
            state = torch.load(sample.path / "model" / f"rank{rank}.pt", weights_only=True)
        for module in state["modules"]:
            for handle in module["handles"]:
                data = handle["flat_param.data"]
                infos = handle["flat_param._shard_param_infos"]
                for fqn, info in zip(handle["flat_param._fqns"], infos, strict=True):
                    if not info.in_shard:
                        continue
                    name = _unflatten_local(module["name"], fqn)
                    piece = data[info.offset_in_shard : info.offset_in_shard + info.numel_in_shard]
                    flat[name][info.intra_param_start_idx : info.intra_param_end_idx + 1] = piece
                    covered[name] += info.numel_in_shard

    rebuilt = {name: flat[name].view(sample.tensors[name].shape) for name in flat}
    _assert_same_tensors(rebuilt, sample.tensors)
    assert covered == {name: t.numel() for name, t in sample.tensors.items()}
    assert (sample.path / "metadata.yaml").read_text().strip() == "world_size: 2"


def test_local_optimizer_ids_per_rank(sample_factory) -> None:
    sample = sample_factory("olmo2-sharded-local")

    for rank in range(2):
        optim = torch.load(sample.path / "optim" / f"rank{rank}.pt", weights_only=True)
        names = [n for group in optim["param_groups"] for n in group["param_names"]]
        ids = [i for group in optim["param_groups"] for i in group["params"]]
        assert ids == list(range(len(names)))
        assert set(optim["state"]) < set(ids)
        for index, entry in optim["state"].items():
            name = names[index].replace(FSDP_PREFIX, "")
            full = sample.optimizer_tensors[f"{name}.exp_avg"]
            assert entry["exp_avg"].dim() == 1
            assert entry["exp_avg"].numel() <= full.numel()


def _olmo_core_v01_read(folder: Path, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    metadata = json.loads((folder / "metadata.json").read_text())["tensors"]
    files = {path.name: _read_safetensors(path) for path in folder.glob("rank_*.safetensors")}
    result: dict[str, torch.Tensor] = {}
    for key, entry in metadata.items():
        if key not in shapes:
            continue
        flat = torch.zeros(max(1, int(torch.Size(entry["shape"]).numel())))
        for file_name, spec in entry["shard_spec_per_file"].items():
            for start, end in spec["flattened_offsets"]:
                if end == start:
                    continue
                flat[start:end] = files[file_name][key]
        result[key] = flat.view(shapes[key])
    return result


def test_olmo_core_v01_reads_back(sample_factory) -> None:
    sample = sample_factory("olmo2-sharded-olmo-core")

    shapes = {name: tensor.shape for name, tensor in sample.tensors.items()}
    model = _olmo_core_v01_read(sample.path / "model", shapes)

    _assert_same_tensors(model, sample.tensors)
    metadata = json.loads((sample.path / "model" / "metadata.json").read_text())["tensors"]
    split = [
        name
        for name, entry in metadata.items()
        if all(
            spec["flattened_offsets"][0][1] > spec["flattened_offsets"][0][0]
            for spec in entry["shard_spec_per_file"].values()
        )
        and len(sample.tensors[name].shape) == 2
    ]
    empty = [
        name
        for name, entry in metadata.items()
        if any(s["flattened_offsets"] == [[0, 0]] for s in entry["shard_spec_per_file"].values())
    ]
    assert split, "expected a matrix split across both rank files"
    assert empty, "expected a tensor held wholly by one rank"
    rank_1 = _read_safetensors(sample.path / "model" / "rank_1.safetensors")
    assert rank_1[empty[0]].shape == (0,) or _read_safetensors(
        sample.path / "model" / "rank_0.safetensors"
    )[empty[0]].shape == (0,)


def test_olmo_core_v01_optimizer_reads_back(sample_factory) -> None:
    sample = sample_factory("olmo2-sharded-olmo-core")

    shapes = {
        f"state.{name.rsplit('.', 1)[0]}.__{name.rsplit('.', 1)[1]}": tensor.shape
        for name, tensor in sample.optimizer_tensors.items()
    }
    stored = _olmo_core_v01_read(sample.path / "optim", shapes)
    flat = {key.removeprefix("state.").replace(".__", "."): value for key, value in stored.items()}

    _assert_same_tensors(flat, sample.optimizer_tensors)
    rank_0 = _read_safetensors(sample.path / "optim" / "rank_0.safetensors")
    assert _plain_unpickle(bytes(rank_0["state_keys"].tolist())) == [
        "exp_avg",
        "exp_avg_sq",
        "step",
    ]
    assert rank_0["num_param_groups"].tolist() == [2]


def test_bfloat16_sample(tmp_path: Path) -> None:
    sample = build_sample("olmo1-unsharded", tmp_path / "bf16", dtype="bfloat16")

    model = torch.load(sample.path / "model.pt", weights_only=True)

    assert {tensor.dtype for tensor in model.values()} == {torch.bfloat16}
    _assert_same_tensors(model, sample.tensors)


def test_encode_key_round_trip() -> None:
    key = encode_key(("state", 3, "exp_avg"), False)

    assert _plain_unpickle(base64.urlsafe_b64decode(key)) == (("state", 3, "exp_avg"), False)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("no-such-sample", {}, "unknown sample"),
        ("olmo1-unsharded", {"dtype": "int3"}, "invalid sample dtype"),
        ("olmo1-unsharded", {"world_size": 2}, "invalid options"),
        ("olmo1-sharded-torch-legacy", {"world_size": 0}, "invalid world_size"),
    ],
)
def test_build_sample_rejects_bad_input(tmp_path: Path, name, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_sample(name, tmp_path / "out", **options)

    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_build_sample_rejects_non_empty_dir(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")

    with pytest.raises(ValueError, match="not empty"):
        build_sample("hf-olmo", target)

    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
