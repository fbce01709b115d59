"""OLMo's encoded safetensors keys.

OLMo's ``unshard.py --safe-tensors`` and ``convert_pt_to_safetensors.py`` store each entry under
urlsafe-base64 of a pickled ``(keys_tuple, value_is_pickled)``. For a model the tuple is the
one dotted name; for an optimizer dict it is the path of str and int keys. A value whose flag is
set is a pickled Python object stored as a uint8 tensor.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from olmo_inspect.errors import CorruptFile, UnsafePickle
from olmo_inspect.io.unpickler import unpickle

# An encoded key is a few dozen bytes; anything much longer is not one.
MAX_ENCODED_KEY_LENGTH = 4096


@dataclass(frozen=True)
class DecodedKey:
    """A decoded key: the path of dict keys and whether the value is a pickled object."""

    path: tuple[str | int, ...]
    value_is_pickled: bool

    @property
    def dotted(self) -> str:
        return ".".join(str(part) for part in self.path)


def decode_key(key: str) -> DecodedKey | None:
    """Return the decoded form of ``key``, or None when it is not an OLMo-encoded key."""
    if not key or len(key) > MAX_ENCODED_KEY_LENGTH or "." in key:
        return None
    try:
        raw = base64.urlsafe_b64decode(key.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if not raw.startswith(b"\x80"):
        return None
    try:
        value = unpickle(raw, "safetensors key").value
    except (CorruptFile, UnsafePickle):
        return None

    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], bool)):
        return None
    path, value_is_pickled = value
    if not isinstance(path, tuple) or not all(isinstance(part, (str, int)) for part in path):
        return None
    return DecodedKey(path=path, value_is_pickled=value_is_pickled)


def encode_key(path: tuple[str | int, ...], value_is_pickled: bool = False) -> str:
    """Return the OLMo-encoded key for ``path`` (the inverse of :func:`decode_key`)."""
    import pickle

    return base64.urlsafe_b64encode(pickle.dumps((path, value_is_pickled))).decode("ascii")
