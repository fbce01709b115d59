"""Tests for the streaming writers: safetensors, Transformers shard plans, .pt zips, byte copies."""

from __future__ import annotations

import itertools
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import safe_open
from safetensors.torch import load_file

from olmo_inspect.convert.bytecopy import copy_range, copy_range_with_crc
from olmo_inspect.convert.pt_writer import PtWriter, TensorSlot
from olmo_inspect.convert.safetensors_writer import (
    SafetensorsWriter,
    TensorSpec,
    pickled_value_tensor,
    plan_shards,
)
from olmo_inspect.errors import ConversionError
from olmo_inspect.io.olmo_keys import decode_key, encode_key


def sample_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(11, 4, generator=generator),
        "blocks.0.norm": torch.randn(4, generator=generator).to(torch.bfloat16),
        "blocks.0.ids": torch.arange(5, dtype=torch.int64),
        "blocks.0.mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5, dtype=torch.float16),
        "empty": torch.zeros(0, 3),
    }


def spec_of(name: str, value: torch.Tensor) -> TensorSpec:
    return TensorSpec(name, str(value.dtype).removeprefix("torch."), tuple(value.shape))


def test_safetensors_writer_round_trip(tmp_path: Path) -> None:
    tensors = sample_tensors()
    path = tmp_path / "out.safetensors"
    writer = SafetensorsWriter(path, [spec_of(k, v) for k, v in tensors.items()], {"format": "pt"})
    for name, value in tensors.items():
        writer.write_tensor(name, value)
    writer.close()

    loaded = load_file(path)
    assert sorted(loaded) == sorted(tensors)
    for name, value in tensors.items():
        assert loaded[name].dtype == value.dtype
        assert torch.equal(loaded[name], value)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def test_safetensors_header_padded_and_back_to_back(tmp_path: Path) -> None:
    tensors = sample_tensors()
    path = tmp_path / "out.safetensors"
    writer = SafetensorsWriter(path, [spec_of(k, v) for k, v in tensors.items()])
    for name, value in tensors.items():
        writer.write_tensor(name, value)
    writer.close()

    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    assert length % 8 == 0
    offsets = [header[name]["data_offsets"] for name in tensors]
    assert offsets[0][0] == 0
    for previous, current in itertools.pairwise(offsets):
        assert previous[1] == current[0]
    assert offsets[-1][1] == len(raw) - 8 - length


def test_safetensors_copy_bytes(tmp_path: Path) -> None:
    value = torch.randn(6, 5)
    source = tmp_path / "raw.bin"
    source.write_bytes(b"x" * 40 + value.numpy().tobytes())
    path = tmp_path / "out.safetensors"
    writer = SafetensorsWriter(path, [TensorSpec("rows", "float32", (3, 5))])
    fd = os.open(source, os.O_RDONLY)
    try:
        # Rows 1 and 4..5 of the source, back to back.
        writer.copy_bytes("rows", [(fd, 40 + 20, 20), (fd, 40 + 80, 40)])
    finally:
        os.close(fd)
    writer.close()

    expected = torch.cat([value[1:2], value[4:6]])
    assert torch.equal(load_file(path)["rows"], expected)


def test_safetensors_writer_rejects_wrong_order(tmp_path: Path) -> None:
    writer = SafetensorsWriter(
        tmp_path / "out.safetensors",
        [TensorSpec("a", "float32", (2,)), TensorSpec("b", "float32", (2,))],
    )
    with pytest.raises(ConversionError, match="next in order is a"):
        writer.write_tensor("b", torch.zeros(2))
    writer.abort()


def test_safetensors_writer_rejects_shape_mismatch(tmp_path: Path) -> None:
    writer = SafetensorsWriter(tmp_path / "out.safetensors", [TensorSpec("a", "float32", (2,))])
    with pytest.raises(ConversionError, match="header says"):
        writer.write_tensor("a", torch.zeros(3))
    writer.abort()


@pytest.mark.parametrize("max_shard_size", [300, "1KB", "5GB"])
def test_plan_shards_matches_huggingface_hub(max_shard_size: int | str) -> None:
    tensors = {f"layer.{index}.weight": torch.zeros(index + 1, 16) for index in range(12)}
    specs = [spec_of(name, value) for name, value in tensors.items()]

    ours = plan_shards(specs, max_shard_size)
    theirs = split_torch_state_dict_into_shards(
        tensors, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )

    assert ours.files == theirs.filename_to_tensors
    assert ours.total_size == theirs.metadata["total_size"]
    if ours.sharded:
        assert ours.index()["weight_map"] == dict(sorted(theirs.tensor_to_filename.items()))


def test_pickled_value_in_olmo_encoded_file(tmp_path: Path) -> None:
    groups = [{"lr": 0.001, "params": [0, 1]}]
    value = pickled_value_tensor(groups)
    weight = torch.randn(3)
    key_weight = encode_key(("state", 0, "exp_avg"))
    key_groups = encode_key(("param_groups",), True)
    path = tmp_path / "optim.safetensors"
    writer = SafetensorsWriter(path, [spec_of(key_weight, weight), spec_of(key_groups, value)])
    writer.write_tensor(key_weight, weight)
    writer.write_tensor(key_groups, value)
    writer.close()

    loaded = load_file(path)
    decoded = {decode_key(key).path: tensor for key, tensor in loaded.items()}  # type: ignore[union-attr]
    assert torch.equal(decoded[("state", 0, "exp_avg")], weight)
    assert decode_key(key_groups).value_is_pickled  # type: ignore[union-attr]
    assert bytes(decoded[("param_groups",)].numpy()) == bytes(value.numpy())


def pt_tree(tensors: dict[str, torch.Tensor]) -> dict[str, object]:
    slots = {
        name: TensorSlot(str(index), str(value.dtype).removeprefix("torch."), tuple(value.shape))
        for index, (name, value) in enumerate(tensors.items())
    }
    return {"model": slots, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.95)}], "step": 7}


def test_pt_writer_loads_with_weights_only(tmp_path: Path) -> None:
    tensors = sample_tensors()
    path = tmp_path / "model.pt"
    writer = PtWriter(path, pt_tree(tensors))
    for index, value in enumerate(tensors.values()):
        writer.write_tensor(str(index), value)
    writer.close()

    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert loaded["step"] == 7
        assert loaded["param_groups"] == [{"lr": 0.1, "betas": (0.9, 0.95)}]
        for name, value in tensors.items():
            assert loaded["model"][name].dtype == value.dtype
            assert torch.equal(loaded["model"][name], value)


def test_pt_writer_zip_is_valid_and_aligned(tmp_path: Path) -> None:
    tensors = sample_tensors()
    path = tmp_path / "model.pt"
    writer = PtWriter(path, pt_tree(tensors))
    for index, value in enumerate(tensors.values()):
        writer.write_tensor(str(index), value)
    writer.close()

    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        raw = path.read_bytes()
        for info in archive.infolist():
            name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 :][:4])
            data_start = info.header_offset + 30 + name_length + extra_length
            if "/data/" in info.filename:
                assert data_start % 64 == 0
    assert names[0] == "model/data.pkl"
    assert "model/version" in names


def test_pt_writer_copy_bytes_crc(tmp_path: Path) -> None:
    value = torch.randn(4, 4)
    source = tmp_path / "raw.bin"
    source.write_bytes(b"y" * 13 + value.numpy().tobytes())
    path = tmp_path / "model.pt"
    writer = PtWriter(path, {"w": TensorSlot("0", "float32", (2, 4))})
    fd = os.open(source, os.O_RDONLY)
    try:
        writer.copy_bytes("0", [(fd, 13 + 32, 32)])
    finally:
        os.close(fd)
    writer.close()

    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
    assert torch.equal(torch.load(path, weights_only=True)["w"], value[2:4])


def test_pt_writer_close_rejects_missing_tensor(tmp_path: Path) -> None:
    writer = PtWriter(tmp_path / "model.pt", {"w": TensorSlot("0", "float32", (2,))})
    with pytest.raises(ConversionError, match="never written"):
        writer.close()


def test_copy_range_copies_bytes(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    (tmp_path / "a").write_bytes(data)
    target = tmp_path / "b"
    target.write_bytes(b"\x00" * 10)
    source_fd = os.open(tmp_path / "a", os.O_RDONLY)
    target_fd = os.open(target, os.O_WRONLY)
    try:
        copy_range(source_fd, 1_000, 50_000, target_fd, 10)
        crc = copy_range_with_crc(source_fd, 0, 500, target_fd, 50_010)
    finally:
        os.close(source_fd)
        os.close(target_fd)

    written = target.read_bytes()
    assert written[10:50_010] == data[1_000:51_000]
    assert written[50_010:] == data[:500]
    assert crc == zlib.crc32(data[:500])


def test_copy_range_short_source_raises(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    source_fd = os.open(tmp_path / "a", os.O_RDONLY)
    target_fd = os.open(tmp_path / "b", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError):
            copy_range(source_fd, 0, 10, target_fd, 0)
    finally:
        os.close(source_fd)
        os.close(target_fd)
