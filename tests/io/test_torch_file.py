"""The torch.save reader against files written by real torch, and hostile pickles."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from olmo_inspect.errors import CorruptFile, UnsafePickle, UnsupportedFormat
from olmo_inspect.io.torch_file import iter_tensors, read_torch_file
from olmo_inspect.io.unpickler import unpickle
from olmo_inspect.model import dtype_size

DTYPES = [
    torch.float32,
    torch.bfloat16,
    torch.float16,
    torch.int64,
    torch.int8,
    torch.bool,
    torch.float8_e4m3fn,
    torch.uint8,
]


def sample_state_dict() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for index, dtype in enumerate(DTYPES):
        values = torch.randn(3, 5, generator=generator) * 4
        tensors[f"layer.{index}.weight"] = values.to(dtype)
    tensors["scalar"] = torch.tensor(7.5)
    tensors["empty"] = torch.zeros(0, 4)
    return tensors


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    return (
        tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        if tensor.numel()
        else b""
    )


def stored_tensor_bytes(path: Path, record_data, shape, dtype: str) -> bytes:
    size = dtype_size(dtype)
    numel = 1
    for dim in shape:
        numel *= dim
    start = record_data.data_start + record_data.storage_offset * size
    with path.open("rb") as handle:
        return os.pread(handle.fileno(), numel * size, start)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_read_torch_file_matches_saved_tensors(tmp_path: Path, zip_format: bool) -> None:
    state = sample_state_dict()
    path = tmp_path / "model.pt"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)

    torch_file = read_torch_file(path)
    found = dict(iter_tensors(torch_file.value))

    assert torch_file.format == ("zip" if zip_format else "legacy")
    assert set(found) == set(state)
    assert torch_file.storage_problems() == []
    for name, tensor in state.items():
        record = found[name]
        assert record.shape == tuple(tensor.shape), name
        assert record.dtype == str(tensor.dtype).removeprefix("torch."), name
        data = torch_file.stored_bytes(record, "model.pt")
        assert stored_tensor_bytes(path, data, record.shape, record.dtype) == tensor_bytes(tensor)


def test_read_torch_file_views_and_strides(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {"base": base, "rows": base[1:3], "transposed": base.t()}
    path = tmp_path / "views.pt"
    torch.save(state, path)

    torch_file = read_torch_file(path)
    found = dict(iter_tensors(torch_file.value))

    assert found["rows"].storage.key == found["base"].storage.key
    assert found["rows"].storage_offset == 6
    assert found["transposed"].stride == (1, 6)
    assert found["transposed"].shape == (6, 4)
    data = torch_file.stored_bytes(found["rows"], "views.pt")
    assert stored_tensor_bytes(path, data, (2, 6), "float32") == tensor_bytes(base[1:3])


def test_read_torch_file_nested_optimizer_dict(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    path = tmp_path / "optim.pt"
    torch.save(optimizer.state_dict(), path)

    torch_file = read_torch_file(path)
    names = {name: record.shape for name, record in iter_tensors(torch_file.value)}

    assert names["state.0.exp_avg"] == (3, 4)
    assert names["state.1.exp_avg_sq"] == (3,)
    assert torch_file.value["param_groups"][0]["lr"] == optimizer.param_groups[0]["lr"]


class _Payload:
    """Pickles as a call to os.system that would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_does_not_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.ones(2), "payload": _Payload(marker)}, path)

    torch_file = read_torch_file(path)

    assert not marker.exists()
    assert any(name.endswith(".system") for name in torch_file.unknown_globals)
    assert dict(iter_tensors(torch_file.value))["weight"].shape == (2,)


def test_hostile_pickle_through_builtins_eval(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(eval_payload(marker))

    result = unpickle(payload, "payload")

    assert not marker.exists()
    assert "builtins.eval" in result.unknown_globals


def eval_payload(marker: Path):
    class Evil:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))

    return Evil()


def test_getattr_off_the_allow_list_is_rejected() -> None:
    # GLOBAL builtins.getattr, GLOBAL os.path, 'join', TUPLE2, REDUCE
    payload = b"\x80\x02cbuiltins\ngetattr\ncos\npath\nX\x04\x00\x00\x00join\x86R."
    with pytest.raises(UnsafePickle):
        unpickle(payload, "payload")


def test_build_on_a_recorder_is_rejected() -> None:
    # GLOBAL torch._utils._rebuild_parameter, then BUILD with a __defaults__ state.
    payload = b"\x80\x02ctorch._utils\n_rebuild_parameter\nN}X\x0c\x00\x00\x00__defaults__)s\x86b."
    with pytest.raises((UnsafePickle, CorruptFile)):
        unpickle(payload, "payload")


def test_truncated_zip_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(64)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(CorruptFile, match=r"model.pt"):
        read_torch_file(path)


def test_corrupt_data_pkl_is_corrupt(tmp_path: Path) -> None:
    source = tmp_path / "source.pt"
    torch.save({"w": torch.ones(4)}, source)
    target = tmp_path / "model.pt"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename.endswith("data.pkl"):
                data = data[: len(data) - 5]
            out.writestr(info, data)

    with pytest.raises(CorruptFile, match=r"model.pt"):
        read_torch_file(target)


def test_missing_storage_entry_is_reported(tmp_path: Path) -> None:
    source = tmp_path / "source.pt"
    torch.save({"w": torch.ones(4), "b": torch.zeros(2)}, source)
    target = tmp_path / "model.pt"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            if info.filename.endswith("/data/1"):
                continue
            out.writestr(info, archive.read(info))

    problems = read_torch_file(target).storage_problems()

    assert len(problems) == 1
    assert "storage 1" in problems[0]


def test_empty_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    with pytest.raises(CorruptFile, match=r"empty"):
        read_torch_file(path)


def test_plain_pickle_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UnsupportedFormat, match=r"not one written by torch.save"):
        read_torch_file(path)


def test_random_bytes_are_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(struct.pack("<Q", 123456789) + os.urandom(64))
    with pytest.raises((UnsupportedFormat, CorruptFile), match=r"model.pt"):
        read_torch_file(path)


def test_numpy_and_paths_in_train_state(tmp_path: Path) -> None:
    import pathlib

    import numpy as np

    state = {
        "global_step": 12,
        "checkpoints": [pathlib.PosixPath("/runs/a/step10")],
        "rng": {"numpy": np.random.get_state(), "torch": torch.random.get_rng_state()},
    }
    path = tmp_path / "train.pt"
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())

    value = read_torch_file(path).value

    assert value["global_step"] == 12
    assert value["checkpoints"] == ["/runs/a/step10"]
    assert value["rng"]["numpy"][0] == "MT19937"
