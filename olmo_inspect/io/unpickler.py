"""A restricted unpickler that turns a checkpoint's pickle into inert records.

It never imports a module named in the pickle and never calls anything the pickle names.
Globals on the allow-list map to recorders that keep their arguments: a tensor becomes a
:class:`TensorRecord`, a ``ShardedTensor`` a :class:`PickledObject` with its state. Every other
global becomes an inert placeholder *type*, shown by its qualified name, because the NEWOBJ
opcode needs a type. Persistent ids (torch storages) become :class:`StorageRecord` objects.
The standard library's C unpickler does the parsing. Only ``find_class`` and
``persistent_load`` are ours, so nothing outside this module can be reached from the pickle.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar

from olmo_inspect.errors import CorruptFile, UnsafePickle

# torch's legacy typed storage classes and the dtype of their elements.
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "UntypedStorage": "uint8",
}

# torch dtype attribute names (``torch.float32``) and their canonical spelling.
TORCH_DTYPE_NAMES: dict[str, str] = {
    "float64": "float64",
    "double": "float64",
    "float32": "float32",
    "float": "float32",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "float8_e4m3fn": "float8_e4m3fn",
    "float8_e5m2": "float8_e5m2",
    "float8_e4m3fnuz": "float8_e4m3fnuz",
    "float8_e5m2fnuz": "float8_e5m2fnuz",
    "float8_e8m0fnu": "float8_e8m0fnu",
    "complex128": "complex128",
    "cdouble": "complex128",
    "complex64": "complex64",
    "cfloat": "complex64",
    "complex32": "complex32",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "short": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
}

# Classes that the formats need, recorded as inert objects with their pickled state.
ALLOWED_RECORD_CLASSES = frozenset(
    {
        "torch.distributed._shard.sharded_tensor.api.ShardedTensor",
        "torch.distributed._shard.sharded_tensor.api.ShardedTensor.ProcessGroupState",
        "torch.distributed._shard.sharded_tensor.shard.Shard",
        "torch.distributed._shard.sharded_tensor.metadata.ShardedTensorMetadata",
        "torch.distributed._shard.sharded_tensor.metadata.TensorProperties",
        "torch.distributed._shard.sharded_tensor.metadata.MEM_FORMAT_ENCODING",
        "torch.distributed._shard.metadata.ShardMetadata",
        "torch.distributed.remote_device._remote_device",
        "torch.distributed._shard.sharding_spec.chunk_sharding_spec.ChunkShardingSpec",
        "torch.distributed.checkpoint.metadata.Metadata",
        "torch.distributed.checkpoint.metadata.TensorStorageMetadata",
        "torch.distributed.checkpoint.metadata.BytesStorageMetadata",
        "torch.distributed.checkpoint.metadata.ChunkStorageMetadata",
        "torch.distributed.checkpoint.metadata.MetadataIndex",
        "torch.distributed.checkpoint.metadata.StorageMeta",
        "torch.distributed.checkpoint.metadata.TensorProperties",
        "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING",
        "torch.distributed.checkpoint.filesystem._StorageInfo",
        "olmo_core.distributed.checkpoint.filesystem._StorageInfo",
        "torch.distributed.fsdp._flat_param._ShardParamInfo",
        "torch.distributed.fsdp.flat_param._ShardParamInfo",
        "numpy.ndarray",
        "numpy.dtype",
    }
)

SHARDED_TENSOR = "torch.distributed._shard.sharded_tensor.api.ShardedTensor"


class DType(str):
    """A torch dtype named in a pickle, e.g. ``torch.bfloat16``, kept as its canonical name."""

    # No __dict__, so a BUILD opcode aimed at a shared DType fails instead of mutating it.
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class StorageType:
    """A torch storage class named in a pickle, e.g. ``torch.FloatStorage``."""

    name: str
    dtype: str

    @property
    def untyped(self) -> bool:
        return self.name == "UntypedStorage"


@dataclass(frozen=True)
class StorageRecord:
    """A torch storage referenced by persistent id: its key, element dtype, numel and device.

    For an ``UntypedStorage`` the dtype is ``uint8`` and ``numel`` counts bytes. ``view`` is
    the legacy format's ``(view_key, offset, size)`` when the storage is a view of another.
    """

    key: str
    dtype: str
    numel: int
    location: str
    view: tuple[str, int, int] | None = None


@dataclass
class TensorRecord:
    """A tensor rebuilt by ``torch._utils._rebuild_tensor_v2``/``_v3``, without its data."""

    storage: StorageRecord
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str
    requires_grad: bool = False
    is_parameter: bool = False


@dataclass
class WrapperSubclassRecord:
    """A tensor subclass rebuilt by ``_rebuild_wrapper_subclass`` (e.g. a ``ShardedTensor``)."""

    type_name: str
    dtype: str
    shape: tuple[int, ...]
    device: str


@dataclass
class NumpyArrayRecord:
    """A numpy array: its shape and dtype are kept, its bytes are not decoded."""

    shape: tuple[int, ...] = ()
    dtype: str = ""
    nbytes: int = 0


class PickledObject:
    """Inert stand-in for an instance of a class named in a pickle.

    ``pickle_args`` contains the constructor arguments (REDUCE or NEWOBJ) and ``pickle_state``
    the BUILD state. :func:`record_type` makes one subclass per qualified name, and ``allowed``
    is True when that name is on the allow-list.
    """

    qualname: ClassVar[str] = "object"
    allowed: ClassVar[bool] = False

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        instance = object.__new__(cls)
        instance.pickle_args = args
        instance.pickle_kwargs = kwargs
        instance.pickle_state = None
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.pickle_state = state

    def fields(self) -> dict[str, Any]:
        """Return the pickled attribute dict (BUILD state, also ``(dict, slots)`` pairs)."""
        state = self.pickle_state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            merged = dict(state[0]) if isinstance(state[0], dict) else {}
            merged.update(state[1])
            return merged
        if isinstance(state, dict):
            return state
        return {}

    def field(self, name: str, default: Any = None) -> Any:
        return self.fields().get(name, default)

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


_RECORD_TYPES: dict[str, type[PickledObject]] = {}


def record_type(qualname: str) -> type[PickledObject]:
    """Return the inert record type for ``qualname``, made once per name."""
    existing = _RECORD_TYPES.get(qualname)
    if existing is not None:
        return existing
    short_name = qualname.rsplit(".", 1)[-1] or "object"
    created = type(
        short_name,
        (PickledObject,),
        {"qualname": qualname, "allowed": qualname in ALLOWED_RECORD_CLASSES},
    )
    _RECORD_TYPES[qualname] = created
    return created


def _dtype_of(value: Any, fallback: str) -> str:
    if isinstance(value, DType):
        return str(value)
    return fallback


def _rebuild_tensor(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    *rest: Any,
) -> TensorRecord:
    if not isinstance(storage, StorageRecord):
        raise UnsafePickle(f"tensor rebuilt from {type(storage).__name__}, not from a storage")

    # _rebuild_tensor_v3 passes the dtype as the 7th argument (5th of ``rest``).
    dtype = storage.dtype
    if len(rest) >= 3 and isinstance(rest[2], DType):
        dtype = str(rest[2])

    return TensorRecord(
        storage=storage,
        storage_offset=int(storage_offset),
        shape=tuple(int(x) for x in size),
        stride=tuple(int(x) for x in stride),
        dtype=dtype,
        requires_grad=bool(rest[0]) if rest else False,
    )


def _rebuild_parameter(data: Any, requires_grad: Any = False, *rest: Any) -> Any:
    if isinstance(data, TensorRecord):
        data.is_parameter = True
        data.requires_grad = bool(requires_grad)
    return data


def _rebuild_wrapper_subclass(
    cls: Any,
    dtype: Any,
    size: Any,
    stride: Any = None,
    storage_offset: Any = 0,
    layout: Any = None,
    device: Any = "cpu",
    *rest: Any,
) -> WrapperSubclassRecord:
    type_name = getattr(cls, "qualname", type(cls).__name__)
    return WrapperSubclassRecord(
        type_name=type_name,
        dtype=_dtype_of(dtype, "unknown"),
        shape=tuple(int(x) for x in size),
        device=str(device),
    )


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    allowed = (_rebuild_wrapper_subclass, _rebuild_tensor)
    if not isinstance(func, Recorder) or func.function not in allowed:
        raise UnsafePickle("_rebuild_from_type_v2 called with a function off the allow-list")
    rebuilt = func(*args)
    if isinstance(new_type, type) and issubclass(new_type, PickledObject):
        instance = new_type.__new__(new_type, rebuilt)
        instance.__setstate__(state)
        return instance
    return rebuilt


def _get_layout(name: Any) -> str:
    return str(name)


def _device(kind: Any, index: Any = None) -> str:
    return f"{kind}:{index}" if index is not None else str(kind)


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or str(encoding).lower() not in {"latin1", "latin-1"}:
        raise UnsafePickle("_codecs.encode is allowed only for latin1-encoded strings")
    return text.encode("latin1")


def _defaultdict(*args: Any) -> dict[Any, Any]:
    return {}


def _posix_path(*parts: Any) -> str:
    return str(PurePosixPath(*[str(part) for part in parts]))


def _getattr(obj: Any, name: Any, *default: Any) -> Any:
    if getattr(obj, "qualname", None) == SHARDED_TENSOR and name == "ProcessGroupState":
        return record_type(f"{SHARDED_TENSOR}.ProcessGroupState")
    raise UnsafePickle(f"getattr({obj!r}, {name!r}) is not allowed in a checkpoint pickle")


class _NumpyArray(PickledObject):
    qualname = "numpy.ndarray"
    allowed = True

    def __setstate__(self, state: Any) -> None:
        self.pickle_state = state
        self.record = NumpyArrayRecord()
        if isinstance(state, tuple) and len(state) >= 5:
            shape, dtype, raw = state[1], state[2], state[4]
            self.record.shape = tuple(int(x) for x in shape)
            if isinstance(dtype, PickledObject) and dtype.pickle_args:
                self.record.dtype = str(dtype.pickle_args[0])
            self.record.nbytes = len(raw) if isinstance(raw, (bytes, bytearray)) else 0


def _numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> _NumpyArray:
    return _NumpyArray.__new__(_NumpyArray)


class Recorder:
    """A callable from the allow-list, wrapped so that the pickle cannot change it.

    A BUILD opcode aimed at a plain function would set its attributes (``__defaults__``
    included) for the whole process; aimed at a Recorder it raises instead.
    """

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        object.__setattr__(self, "function", function)

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafePickle(f"a checkpoint pickle tried to set {name!r} on a recorder")

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickle("a checkpoint pickle tried to change a recorder's state")


_GLOBALS: dict[str, Any] = {
    "torch._utils._rebuild_tensor_v2": Recorder(_rebuild_tensor),
    "torch._utils._rebuild_tensor_v3": Recorder(_rebuild_tensor),
    "torch._utils._rebuild_tensor": Recorder(_rebuild_tensor),
    "torch._utils._rebuild_parameter": Recorder(_rebuild_parameter),
    "torch._utils._rebuild_parameter_with_state": Recorder(_rebuild_parameter),
    "torch._utils._rebuild_wrapper_subclass": Recorder(_rebuild_wrapper_subclass),
    "torch._tensor._rebuild_from_type_v2": Recorder(_rebuild_from_type_v2),
    "torch.serialization._get_layout": Recorder(_get_layout),
    "torch.Size": Recorder(tuple),
    "torch.device": Recorder(_device),
    "collections.OrderedDict": Recorder(OrderedDict),
    "collections.defaultdict": Recorder(_defaultdict),
    "_codecs.encode": Recorder(_codecs_encode),
    "builtins.getattr": Recorder(_getattr),
    "__builtin__.getattr": Recorder(_getattr),
    "pathlib.PosixPath": Recorder(_posix_path),
    "pathlib.PurePosixPath": Recorder(_posix_path),
    "pathlib.Path": Recorder(_posix_path),
    "numpy.core.multiarray._reconstruct": Recorder(_numpy_reconstruct),
    "numpy._core.multiarray._reconstruct": Recorder(_numpy_reconstruct),
    "numpy.ndarray": _NumpyArray,
}

for _name, _dtype in STORAGE_DTYPES.items():
    _GLOBALS[f"torch.{_name}"] = StorageType(_name, _dtype)
_GLOBALS["torch.storage.UntypedStorage"] = StorageType("UntypedStorage", "uint8")
for _name, _dtype in TORCH_DTYPE_NAMES.items():
    _GLOBALS[f"torch.{_name}"] = DType(_dtype)


@dataclass
class UnpickleResult:
    """The unpickled object tree and the globals that were off the allow-list."""

    value: Any
    unknown_globals: list[str] = field(default_factory=list)
    storages: list[StorageRecord] = field(default_factory=list)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals are inert recorders; see the module docstring."""

    def __init__(self, stream: io.BufferedIOBase | io.BytesIO, source: str) -> None:
        super().__init__(stream, encoding="latin1")
        self.source = source
        self.unknown_globals: list[str] = []
        self.storages: list[StorageRecord] = []

    def find_class(self, module: str, name: str) -> Any:
        qualname = f"{module}.{name}"
        known = _GLOBALS.get(qualname)
        if known is not None:
            return known
        if qualname not in ALLOWED_RECORD_CLASSES and qualname not in self.unknown_globals:
            self.unknown_globals.append(qualname)
        return record_type(qualname)

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafePickle(f"{self.source}: unsupported persistent id {pid!r:.80}")

        # Zip format: ('storage', type, key, location, numel).
        # Legacy format adds a sixth item: (view_key, offset, size) or None.
        if len(pid) not in (5, 6):
            raise CorruptFile(f"{self.source}: storage persistent id has {len(pid)} fields")
        storage_type, key, location, numel = pid[1], pid[2], pid[3], pid[4]
        if isinstance(storage_type, StorageType):
            dtype = storage_type.dtype
        elif isinstance(storage_type, DType):
            dtype = str(storage_type)
        else:
            raise UnsafePickle(f"{self.source}: storage of unknown type {storage_type!r:.80}")

        view = None
        if len(pid) == 6 and pid[5] is not None:
            view_key, view_offset, view_size = pid[5]
            view = (str(view_key), int(view_offset), int(view_size))

        record = StorageRecord(
            key=str(key), dtype=dtype, numel=int(numel), location=str(location), view=view
        )
        self.storages.append(record)
        return record


# Exceptions the C unpickler raises on a malformed pickle.
_PARSE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    OverflowError,
    MemoryError,
    UnicodeDecodeError,
    RecursionError,
)


def load_stream(stream: io.BufferedIOBase | io.BytesIO, source: str) -> UnpickleResult:
    """Unpickle one object from an open binary stream, leaving the stream after that pickle.

    ``source`` names the file in error messages. torch's legacy format needs the stream form,
    because several pickles follow each other in one file.

    Raises:
        CorruptFile: the pickle stream is truncated or malformed.
        UnsafePickle: the pickle requests an operation the allow-list forbids.
    """
    unpickler = RestrictedUnpickler(stream, source)
    try:
        value = unpickler.load()
    except (UnsafePickle, CorruptFile):
        raise
    except _PARSE_ERRORS as error:
        raise CorruptFile(
            f"{source}: the pickle is corrupt or truncated ({type(error).__name__}: {error}); "
            "re-copy the file from its source"
        ) from error
    return UnpickleResult(
        value=value, unknown_globals=unpickler.unknown_globals, storages=unpickler.storages
    )


def unpickle(data: bytes, source: str) -> UnpickleResult:
    """Unpickle ``data`` into inert records; see :func:`load_stream`."""
    return load_stream(io.BytesIO(data), source)
