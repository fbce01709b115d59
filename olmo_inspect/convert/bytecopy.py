"""Copy byte ranges from file to file without materialising tensors.

Uses ``os.copy_file_range`` (the kernel copies, and may share extents on filesystems that
support it) and falls back to buffered ``pread``/``write`` when the kernel cannot copy between
the two files (``EXDEV``, ``EOPNOTSUPP``, ``ENOSYS``, or a platform without the call).
"""

from __future__ import annotations

import errno
import logging
import os
import zlib

log = logging.getLogger(__name__)

# Chunk size of the pread/write fallback and of CRC-computing copies, in bytes.
COPY_CHUNK_BYTES = 16 * 1024 * 1024
# errno values after which copy_file_range is given up for the buffered path.
FALLBACK_ERRNOS = frozenset(
    code
    for code in (
        errno.EXDEV,
        errno.EOPNOTSUPP,
        errno.ENOSYS,
        getattr(errno, "ENOTSUP", None),
        errno.EINVAL,
    )
    if code is not None
)


def copy_range(
    source_fd: int, source_offset: int, length: int, target_fd: int, target_offset: int
) -> None:
    """Copy ``length`` bytes at ``source_offset`` of one open file to ``target_offset`` of another.

    Raises:
        OSError: a read or write failed, or the source ended early (``EIO``).
    """
    done = 0
    use_kernel = hasattr(os, "copy_file_range")
    while done < length:
        if use_kernel:
            try:
                count = os.copy_file_range(
                    source_fd, target_fd, length - done, source_offset + done, target_offset + done
                )
            except OSError as error:
                if error.errno not in FALLBACK_ERRNOS:
                    raise
                log.debug("copy_file_range failed (%s); using pread/write", error)
                use_kernel = False
                continue
        else:
            chunk = os.pread(source_fd, min(COPY_CHUNK_BYTES, length - done), source_offset + done)
            count = _pwrite_all(target_fd, chunk, target_offset + done)
        if count == 0:
            raise OSError(errno.EIO, f"source ended {length - done} bytes before the range end")
        done += count


def copy_range_with_crc(
    source_fd: int,
    source_offset: int,
    length: int,
    target_fd: int,
    target_offset: int,
    crc: int = 0,
) -> int:
    """Copy like ``copy_range`` through user space and return the running CRC-32 of the bytes.

    Zip entries need the CRC-32 of their data, which a kernel copy cannot report.
    """
    done = 0
    while done < length:
        chunk = os.pread(source_fd, min(COPY_CHUNK_BYTES, length - done), source_offset + done)
        if not chunk:
            raise OSError(errno.EIO, f"source ended {length - done} bytes before the range end")
        crc = zlib.crc32(chunk, crc)
        _pwrite_all(target_fd, chunk, target_offset + done)
        done += len(chunk)
    return crc


def _pwrite_all(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)
    return written
