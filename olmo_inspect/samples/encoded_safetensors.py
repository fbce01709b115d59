"""OLMo's encoded-key safetensors, as ``unshard.py --safe-tensors`` writes them.

Each key is the urlsafe base64 of a pickled ``(keys_tuple, value_is_pickled)``. A nested dict is
flattened into tuples of its keys, mixing str and int as the optimizer state does. A value that
is not a tensor is pickled into a uint8 tensor and flagged ``value_is_pickled``.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

EncodedKey = tuple[tuple[Any, ...], bool]


def encode_key(keys: tuple[Any, ...], value_is_pickled: bool = False) -> str:
    """Encode one flattened key the way OLMo does."""
    raw = pickle.dumps((keys, value_is_pickled))
    return base64.urlsafe_b64encode(raw).decode("ascii")


def flatten_for_safetensors(tree: Mapping[Any, Any]) -> dict[EncodedKey, torch.Tensor]:
    """Flatten ``tree`` into ``{(keys_tuple, value_is_pickled): tensor}``."""
    flat: dict[EncodedKey, torch.Tensor] = {}
    for key, value in tree.items():
        if isinstance(value, torch.Tensor):
            flat[((key,), False)] = value
        elif isinstance(value, Mapping):
            for (inner_keys, pickled), tensor in flatten_for_safetensors(value).items():
                flat[((key, *inner_keys), pickled)] = tensor
        else:
            payload = bytearray(pickle.dumps(value))
            flat[((key,), True)] = torch.frombuffer(payload, dtype=torch.uint8)
    return flat


def write_olmo_encoded_safetensors(path: Path, tree: Mapping[Any, Any]) -> dict[str, str]:
    """Write ``tree`` to ``path`` with OLMo-encoded keys; return ``{dotted name: stored key}``.

    The dotted name joins the key tuple with ``.``; for a model state dict it is the tensor's
    unsharded name.
    """
    flat = flatten_for_safetensors(tree)
    encoded = {
        encode_key(keys, pickled): tensor.contiguous() for (keys, pickled), tensor in flat.items()
    }
    save_file(encoded, str(path))
    return {
        ".".join(str(part) for part in keys): encode_key(keys, pickled) for keys, pickled in flat
    }
