"""OLMo's encoded safetensors keys: decoding, plain keys, and keys that carry a payload."""

from __future__ import annotations

import base64
import os
import pickle
from pathlib import Path

from olmo_inspect.io.olmo_keys import decode_key, encode_key


def olmo_encode(path: tuple, value_is_pickled: bool) -> str:
    # The encoding OLMo's safetensors utilities use, written out independently of ours.
    return base64.urlsafe_b64encode(pickle.dumps((path, value_is_pickled))).decode()


def test_decode_model_key() -> None:
    key = olmo_encode(("transformer.wte.weight",), False)
    decoded = decode_key(key)
    assert decoded is not None
    assert decoded.dotted == "transformer.wte.weight"
    assert decoded.value_is_pickled is False


def test_decode_optimizer_key_mixes_str_and_int() -> None:
    decoded = decode_key(olmo_encode(("state", 3, "exp_avg"), False))
    assert decoded is not None
    assert decoded.path == ("state", 3, "exp_avg")


def test_encode_matches_olmo_encoding_after_decode() -> None:
    path = ("param_groups", 0, "lr")
    assert decode_key(encode_key(path, True)) == decode_key(olmo_encode(path, True))


def test_plain_keys_are_not_decoded() -> None:
    assert decode_key("model.layers.0.self_attn.q_proj.weight") is None
    assert decode_key("lm_head") is None
    assert decode_key("") is None


def test_key_with_code_payload_is_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    key = base64.urlsafe_b64encode(pickle.dumps(((Evil(),), False))).decode()

    assert decode_key(key) is None
    assert not marker.exists()
