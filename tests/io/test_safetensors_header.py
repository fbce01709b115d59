"""The safetensors header reader against real files and headers that break the format."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from olmo_inspect.errors import CorruptFile
from olmo_inspect.io.safetensors_header import MAX_SAFETENSORS_HEADER, read_safetensors_header


def write_raw(path: Path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_header_matches_saved_tensors(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(4, 3),
        "b": torch.randn(2, 2).to(torch.bfloat16),
        "c": torch.arange(5, dtype=torch.int64),
        "d": torch.ones(3, dtype=torch.bool),
        "e": torch.zeros(0, 7, dtype=torch.float16),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})

    header = read_safetensors_header(path)
    entries = {entry.name: entry for entry in header.entries}

    assert header.metadata == {"format": "pt"}
    assert set(entries) == set(tensors)
    with path.open("rb") as handle:
        for name, tensor in tensors.items():
            entry = entries[name]
            assert entry.shape == tuple(tensor.shape)
            assert entry.dtype == str(tensor.dtype).removeprefix("torch.")
            raw = os.pread(handle.fileno(), entry.nbytes, entry.begin)
            expected = (
                tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
            )
            assert raw == expected


def test_header_length_past_file_end(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(CorruptFile, match="claims 10000 bytes"):
        read_safetensors_header(path)


def test_header_length_over_limit(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", MAX_SAFETENSORS_HEADER + 1) + b"{}")
    with pytest.raises(CorruptFile, match="exceeds"):
        read_safetensors_header(path)


def test_file_shorter_than_length_prefix(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CorruptFile, match="too short"):
        read_safetensors_header(path)


def test_invalid_json_header(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(CorruptFile, match="not valid JSON"):
        read_safetensors_header(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}, "unknown dtype"),
        ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, "invalid shape"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}, "needs 8"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "invalid data_offsets"),
        ([1, 2], "not an object"),
    ],
)
def test_invalid_entries(tmp_path: Path, entry, message: str) -> None:
    path = tmp_path / "model.safetensors"
    write_raw(path, {"w": entry}, b"\0" * 16)
    with pytest.raises(CorruptFile, match=message):
        read_safetensors_header(path)


def test_overlapping_tensors(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    write_raw(path, header, b"\0" * 12)
    with pytest.raises(CorruptFile, match="overlap"):
        read_safetensors_header(path)


def test_truncated_data(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    with pytest.raises(CorruptFile, match="truncated"):
        read_safetensors_header(path)


def test_metadata_must_be_strings(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    write_raw(path, {"__metadata__": {"a": 1}}, b"")
    with pytest.raises(CorruptFile, match="__metadata__"):
        read_safetensors_header(path)
