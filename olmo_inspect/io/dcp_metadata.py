"""Metadata-only reader for torch.distributed.checkpoint (DCP) folders: ``.metadata`` and items.

``.metadata`` pickles ``Metadata(state_dict_metadata, planner_data, storage_data, storage_meta,
version)``. It is read through the restricted unpickler into the plain records below, whichever
``_StorageInfo`` class it names (torch's or OLMo-core's). Each tensor item in a ``.distcp`` file
is a complete small ``torch.save`` zip; :func:`read_item_tensor` locates its storage bytes from the
inner zip's directory and pickle without reading them. Non-tensor values
(``BytesStorageMetadata`` items, e.g. optimizer param groups) are the only bytes this module
reads, one item at a time and under :data:`MAX_BYTES_ITEM`. It never imports torch.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from olmo_inspect.errors import CorruptFile, UnsupportedFormat
from olmo_inspect.io.unpickler import DType, PickledObject, TensorRecord, unpickle

log = logging.getLogger(__name__)

METADATA_FILE = ".metadata"

# A .metadata pickle grows with tensors x chunks, by roughly 300 bytes per chunk in the fixtures
# (an estimate). 1 GiB leaves room for several million chunks.
MAX_METADATA_BYTES = 1 << 30

# The largest non-tensor item (a pickled param-group value) read into memory.
MAX_BYTES_ITEM = 1 << 20

# The largest data.pkl of a tensor item: it describes one tensor, so a few hundred bytes.
MAX_ITEM_PICKLE_BYTES = 1 << 16

METADATA_CLASS = "torch.distributed.checkpoint.metadata.Metadata"
TENSOR_STORAGE_CLASS = "torch.distributed.checkpoint.metadata.TensorStorageMetadata"
BYTES_STORAGE_CLASS = "torch.distributed.checkpoint.metadata.BytesStorageMetadata"
TORCH_STORAGE_INFO = "torch.distributed.checkpoint.filesystem._StorageInfo"
OLMO_CORE_STORAGE_INFO = "olmo_core.distributed.checkpoint.filesystem._StorageInfo"
STORAGE_INFO_CLASSES = frozenset({TORCH_STORAGE_INFO, OLMO_CORE_STORAGE_INFO})

ZIP_LOCAL_HEADER_SIZE = 30
ZIP_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
ZIP_END_RECORD_SIZE = 22
ZIP_END_RECORD_SIGNATURE = b"PK\x05\x06"


@dataclass(frozen=True)
class DcpChunk:
    """One stored chunk of a tensor: a box at ``offsets`` of shape ``sizes``."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.sizes)


@dataclass
class DcpTensor:
    """A tensor entry of ``state_dict_metadata``: dtype, global size and its chunks."""

    key: str
    dtype: str
    size: tuple[int, ...]
    chunks: list[DcpChunk]

    @property
    def numel(self) -> int:
        return math.prod(self.size)


@dataclass(frozen=True)
class DcpItem:
    """The location of one item: ``[start, start + length)`` of ``file`` (in the DCP folder).

    ``offset`` is the chunk offset of a tensor item (the ``MetadataIndex`` offset) and None
    for a non-tensor item.
    """

    key: str
    offset: tuple[int, ...] | None
    index: int | None
    file: str
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass
class DcpMetadata:
    """A parsed ``.metadata`` file."""

    path: Path
    tensors: dict[str, DcpTensor]
    bytes_keys: list[str]
    items: list[DcpItem]
    planner_data: dict[str, Any] = field(default_factory=dict)
    storage_info_classes: list[str] = field(default_factory=list)
    version: str | None = None
    storage_meta: dict[str, Any] = field(default_factory=dict)
    unknown_globals: list[str] = field(default_factory=list)

    def item_lookup(self) -> dict[tuple[str, tuple[int, ...] | None], DcpItem]:
        """Return the items keyed by ``(key, chunk offset)``, as torch looks them up."""
        return {(item.key, item.offset): item for item in self.items}

    @property
    def files(self) -> list[str]:
        """Return every file the items name, sorted."""
        return sorted({item.file for item in self.items})


@dataclass(frozen=True)
class ItemTensor:
    """The tensor stored in one ``.distcp`` item, as its inner ``torch.save`` zip describes it.

    ``data_start`` is the absolute offset in the ``.distcp`` file of the storage's first byte;
    ``storage_offset`` and ``stride`` are in elements.
    """

    data_start: int
    storage_nbytes: int
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int


def read_dcp_metadata(path: Path) -> DcpMetadata:
    """Read a DCP ``.metadata`` file into plain records, through the restricted unpickler.

    Raises:
        CorruptFile: the file is unreadable, truncated, or its objects have the wrong shape.
        UnsupportedFormat: the pickle is not a DCP ``Metadata``, or it is over the size limit.
    """
    try:
        size = path.stat().st_size
        if size > MAX_METADATA_BYTES:
            raise UnsupportedFormat(
                f"{path}: {size} bytes is over the {MAX_METADATA_BYTES}-byte limit for a DCP "
                ".metadata file"
            )
        raw = path.read_bytes()
    except OSError as error:
        raise CorruptFile(f"{path}: cannot read the file ({error.strerror})") from error
    if not raw:
        raise CorruptFile(f"{path}: the file is empty; re-copy the checkpoint's .metadata")

    result = unpickle(raw, str(path))
    root = result.value
    if not isinstance(root, PickledObject) or root.qualname != METADATA_CLASS:
        found = root.qualname if isinstance(root, PickledObject) else type(root).__name__
        raise UnsupportedFormat(
            f"{path}: not a torch.distributed.checkpoint .metadata (the pickle holds {found})"
        )

    fields = root.fields()
    state_dict_metadata = fields.get("state_dict_metadata")
    storage_data = fields.get("storage_data")
    if not isinstance(state_dict_metadata, dict) or not isinstance(storage_data, dict):
        raise CorruptFile(
            f"{path}: Metadata lacks state_dict_metadata or storage_data; the file is corrupt, "
            "re-copy it from its source"
        )

    tensors: dict[str, DcpTensor] = {}
    bytes_keys: list[str] = []
    for key, entry in state_dict_metadata.items():
        qualname = entry.qualname if isinstance(entry, PickledObject) else type(entry).__name__
        if qualname == TENSOR_STORAGE_CLASS:
            tensors[str(key)] = _tensor_entry(path, str(key), entry)
        elif qualname == BYTES_STORAGE_CLASS:
            bytes_keys.append(str(key))
        else:
            raise CorruptFile(f"{path}: entry {key!r} is a {qualname}, not a storage metadata")

    items, classes = _storage_items(path, storage_data)
    planner_data = fields.get("planner_data")
    storage_meta = fields.get("storage_meta")
    version = fields.get("version")
    log.debug(
        "read %s: %d tensors, %d bytes keys, %d items",
        path,
        len(tensors),
        len(bytes_keys),
        len(items),
    )
    return DcpMetadata(
        path=path,
        tensors=tensors,
        bytes_keys=bytes_keys,
        items=items,
        planner_data=planner_data if isinstance(planner_data, dict) else {},
        storage_info_classes=classes,
        version=str(version) if version is not None else None,
        storage_meta=_plain_fields(storage_meta),
        unknown_globals=result.unknown_globals,
    )


def _plain_fields(value: Any) -> dict[str, Any]:
    if not isinstance(value, PickledObject):
        return {}
    plain: dict[str, Any] = {}
    for name, item in value.fields().items():
        if item is None or isinstance(item, (bool, int, float, str)):
            plain[str(name)] = item
    return plain


def _int_tuple(path: Path, key: str, what: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value
    ):
        raise CorruptFile(
            f"{path}: {what} of {key!r} is not a list of non-negative ints: {value!r:.80}"
        )
    return tuple(value)


def _tensor_entry(path: Path, key: str, entry: PickledObject) -> DcpTensor:
    fields = entry.fields()
    args = entry.pickle_args
    properties = fields.get("properties", args[0] if args else None)
    size = fields.get("size", args[1] if len(args) > 1 else None)
    chunks = fields.get("chunks", args[2] if len(args) > 2 else None)

    dtype = _properties_dtype(properties)
    if dtype is None:
        raise CorruptFile(f"{path}: tensor {key!r} has no readable dtype in its properties")
    if not isinstance(chunks, list):
        raise CorruptFile(f"{path}: tensor {key!r} has no chunk list")

    parsed: list[DcpChunk] = []
    for chunk in chunks:
        chunk_fields = chunk.fields() if isinstance(chunk, PickledObject) else {}
        offsets = _int_tuple(path, key, "chunk offsets", chunk_fields.get("offsets"))
        sizes = _int_tuple(path, key, "chunk sizes", chunk_fields.get("sizes"))
        parsed.append(DcpChunk(offsets, sizes))
    return DcpTensor(key=key, dtype=dtype, size=_int_tuple(path, key, "size", size), chunks=parsed)


def _properties_dtype(properties: Any) -> str | None:
    """Return the dtype of a pickled ``TensorProperties``.

    torch >= 2.1 pickles its state as the tuple ``(dtype, layout, requires_grad,
    memory_format, pin_memory)``; older releases pickled the dataclass ``__dict__``.
    """
    if not isinstance(properties, PickledObject):
        return None
    state = properties.pickle_state
    candidates: list[Any] = []
    if isinstance(state, tuple) and state:
        candidates.append(state[0])
    candidates.append(properties.fields().get("dtype"))
    if properties.pickle_args:
        candidates.append(properties.pickle_args[0])
    for candidate in candidates:
        if isinstance(candidate, DType):
            return str(candidate)
    return None


def _storage_items(path: Path, storage_data: dict[Any, Any]) -> tuple[list[DcpItem], list[str]]:
    items: list[DcpItem] = []
    classes: set[str] = set()
    for index, info in storage_data.items():
        if not isinstance(index, PickledObject) or not isinstance(info, PickledObject):
            raise CorruptFile(
                f"{path}: storage_data has a {type(index).__name__} key, not a MetadataIndex"
            )
        if info.qualname not in STORAGE_INFO_CLASSES:
            raise UnsupportedFormat(
                f"{path}: storage_data uses {info.qualname}, not a known _StorageInfo class"
            )
        classes.add(info.qualname)

        index_fields = index.fields()
        key = index_fields.get("fqn")
        if not isinstance(key, str):
            raise CorruptFile(f"{path}: a storage_data key has no fqn")
        offset = index_fields.get("offset")
        chunk_offset = _int_tuple(path, key, "offset", offset) if offset is not None else None
        hint = index_fields.get("index")

        info_fields = info.fields()
        relative = info_fields.get("relative_path")
        start = info_fields.get("offset")
        length = info_fields.get("length")
        if (
            not isinstance(relative, str)
            or not isinstance(start, int)
            or not isinstance(length, int)
        ):
            raise CorruptFile(
                f"{path}: the storage entry of {key!r} lacks relative_path, offset or length"
            )
        if start < 0 or length < 0:
            raise CorruptFile(
                f"{path}: the storage entry of {key!r} has a negative offset or length"
            )
        _check_relative(path, key, relative)
        items.append(
            DcpItem(
                key=key,
                offset=chunk_offset,
                index=hint if isinstance(hint, int) else None,
                file=relative,
                start=start,
                length=length,
            )
        )
    return items, sorted(classes)


def _check_relative(path: Path, key: str, relative: str) -> None:
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or ".." in pure.parts or "\\" in relative:
        raise CorruptFile(
            f"{path}: the storage entry of {key!r} names {relative!r}, which is not a file "
            "inside the checkpoint folder"
        )


class _ItemWindow(io.RawIOBase):
    """A read-only view of ``[start, start + length)`` of an open file, seekable from 0."""

    def __init__(self, handle: BinaryIO, start: int, length: int) -> None:
        super().__init__()
        self._handle = handle
        self._start = start
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        else:
            position = self._length + offset
        if position < 0:
            raise OSError(f"seek to {position} before the item's start")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        size = max(0, min(len(buffer), self._length - self._position))
        if size == 0:
            return 0
        data = os.pread(self._handle.fileno(), size, self._start + self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def _item_error(source: str, start: int, length: int, reason: str) -> CorruptFile:
    return CorruptFile(
        f"{source}: the item at bytes [{start}, {start + length}) is not a torch.save zip "
        f"({reason}); the file does not match .metadata, re-copy it from its source"
    )


def _open_item_zip(handle: BinaryIO, source: str, start: int, length: int) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(_ItemWindow(handle, start, length))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise _item_error(source, start, length, str(error)) from error


def read_item_tensor(path: Path, start: int, length: int) -> ItemTensor:
    """Locate the storage bytes of the tensor item at ``[start, start + length)`` of ``path``.

    Reads the inner zip's end records and directory, its ``data.pkl`` (a few hundred bytes at
    the item's start) and one 30-byte local header. It never reads the tensor bytes.

    Raises:
        CorruptFile: the range is not a ``torch.save`` zip holding one tensor.
    """
    source = str(path)
    try:
        with path.open("rb") as handle:
            archive = _open_item_zip(handle, source, start, length)
            with archive:
                return _item_tensor(handle, archive, source, start, length)
    except OSError as error:
        raise CorruptFile(f"{path}: cannot read the file ({error.strerror})") from error


def _item_tensor(
    handle: BinaryIO, archive: zipfile.ZipFile, source: str, start: int, length: int
) -> ItemTensor:
    pickle_info = _find_entry(archive, "data.pkl")
    if pickle_info is None:
        raise _item_error(source, start, length, "no data.pkl entry")
    if pickle_info.file_size > MAX_ITEM_PICKLE_BYTES:
        raise _item_error(source, start, length, f"data.pkl is {pickle_info.file_size} bytes")
    try:
        raw = archive.read(pickle_info)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _item_error(source, start, length, str(error)) from error

    tensor = unpickle(raw, f"{source} item at {start}").value
    if not isinstance(tensor, TensorRecord):
        raise _item_error(
            source, start, length, f"it holds a {type(tensor).__name__}, not a tensor"
        )

    prefix = pickle_info.filename.rsplit("/", 1)[0]
    storage_info = _find_entry(archive, f"data/{tensor.storage.key}", prefix)
    if storage_info is None:
        raise _item_error(source, start, length, f"no entry for storage {tensor.storage.key}")
    if storage_info.compress_type != zipfile.ZIP_STORED:
        raise UnsupportedFormat(f"{source}: the item at {start} stores its tensor compressed")

    header = os.pread(handle.fileno(), ZIP_LOCAL_HEADER_SIZE, start + storage_info.header_offset)
    if len(header) < ZIP_LOCAL_HEADER_SIZE or header[:4] != ZIP_LOCAL_HEADER_SIGNATURE:
        raise _item_error(source, start, length, "a local header is missing")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    data_start = (
        start + storage_info.header_offset + ZIP_LOCAL_HEADER_SIZE + name_length + extra_length
    )
    if data_start + storage_info.file_size > start + length:
        raise _item_error(source, start, length, "the storage runs past the item's end")
    return ItemTensor(
        data_start=data_start,
        storage_nbytes=storage_info.file_size,
        dtype=tensor.dtype,
        shape=tensor.shape,
        stride=tensor.stride,
        storage_offset=tensor.storage_offset,
    )


def _find_entry(
    archive: zipfile.ZipFile, suffix: str, prefix: str | None = None
) -> zipfile.ZipInfo | None:
    for info in archive.infolist():
        if prefix is not None:
            if info.filename == f"{prefix}/{suffix}":
                return info
        elif (
            info.filename.endswith(f"/{suffix}")
            and info.filename.count("/") == suffix.count("/") + 1
        ):
            return info
    return None


def resolve_item(path: Path, offset: int, length: int) -> tuple[int, int]:
    """Return ``(data_start, nbytes)`` of the storage of the tensor item at ``offset``.

    ``data_start`` is absolute in ``path``; see :func:`read_item_tensor` for what is read.
    """
    item = read_item_tensor(path, offset, length)
    return item.data_start, item.storage_nbytes


def check_item_bounds(handle: BinaryIO, source: str, item: DcpItem) -> str | None:
    """Return why the item at ``item.start`` does not look like a zip, or None when it does.

    Reads 4 bytes at the item's start (a zip local header) and 22 bytes before its end (the end
    record torch.save writes without a comment), so a file swapped for another rank's file is
    caught without reading the items' directories.
    """
    if item.length < ZIP_LOCAL_HEADER_SIZE + ZIP_END_RECORD_SIZE:
        return f"the item of {item.key} is {item.length} bytes, too short for a torch.save zip"
    head = os.pread(handle.fileno(), 4, item.start)
    tail = os.pread(handle.fileno(), 4, item.end - ZIP_END_RECORD_SIZE)
    if head != ZIP_LOCAL_HEADER_SIGNATURE or tail != ZIP_END_RECORD_SIGNATURE:
        return (
            f"no torch.save zip at bytes [{item.start}, {item.end}), where .metadata puts "
            f"{item.key}"
        )
    return None


def read_bytes_item(
    handle: BinaryIO, source: str, item: DcpItem, limit: int = MAX_BYTES_ITEM
) -> Any:
    """Read the pickled non-tensor value of ``item`` through the restricted unpickler.

    DCP stores such a value as ``torch.save(value)``; a plain pickle is accepted too.

    Raises:
        UnsupportedFormat: the item is longer than ``limit`` bytes.
        CorruptFile, UnsafePickle: the bytes are not a readable pickle.
    """
    if item.length > limit:
        raise UnsupportedFormat(
            f"{source}: the value of {item.key} is {item.length} bytes, over the {limit}-byte limit"
        )
    try:
        raw = os.pread(handle.fileno(), item.length, item.start)
    except OSError as error:
        raise CorruptFile(
            f"{source}: cannot read the value of {item.key} ({error.strerror})"
        ) from error
    if len(raw) < item.length:
        raise CorruptFile(f"{source}: the value of {item.key} is cut off at the end of the file")

    if not raw.startswith(ZIP_LOCAL_HEADER_SIGNATURE):
        return unpickle(raw, f"{source} {item.key}").value
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            info = _find_entry(archive, "data.pkl")
            if info is None:
                raise _item_error(source, item.start, item.length, "no data.pkl entry")
            pickled = archive.read(info)
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise _item_error(source, item.start, item.length, str(error)) from error
    return unpickle(pickled, f"{source} {item.key}").value


__all__ = [
    "MAX_BYTES_ITEM",
    "METADATA_FILE",
    "DcpChunk",
    "DcpItem",
    "DcpMetadata",
    "DcpTensor",
    "ItemTensor",
    "check_item_bounds",
    "read_bytes_item",
    "read_dcp_metadata",
    "read_item_tensor",
    "resolve_item",
]
