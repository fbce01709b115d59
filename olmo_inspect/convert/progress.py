"""One progress record and callback type for long conversions, shared by the CLI and the TUI.

The engine calls the callback at the start of each phase and after each tensor. The callback
may raise ``KeyboardInterrupt`` (or any error) to stop the run, and the engine then removes its
temporary output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace


@dataclass
class Progress:
    """How far a conversion phase has come: counts, bytes and timing.

    ``phase`` is ``"write"`` or ``"verify"``; ``current`` names the tensor just finished.
    """

    phase: str
    tensors_done: int
    tensors_total: int
    bytes_done: int
    bytes_total: int
    current: str = ""
    started: float = field(default_factory=time.monotonic)
    now: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        """Seconds since the phase started."""
        return max(self.now - self.started, 0.0)

    @property
    def rate(self) -> float:
        """Bytes per second so far (0 before the first tensor)."""
        if self.elapsed <= 0:
            return 0.0
        return self.bytes_done / self.elapsed

    @property
    def eta(self) -> float | None:
        """Estimated seconds left at the current rate, or None while the rate is unknown."""
        if self.rate <= 0:
            return None
        return (self.bytes_total - self.bytes_done) / self.rate

    @property
    def fraction(self) -> float:
        """Share of bytes done, from 0 to 1."""
        if self.bytes_total <= 0:
            return 1.0 if self.tensors_done >= self.tensors_total else 0.0
        return min(self.bytes_done / self.bytes_total, 1.0)


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    """Build ``Progress`` records for one phase and pass them to an optional callback."""

    def __init__(
        self, phase: str, tensors_total: int, bytes_total: int, callback: ProgressCallback | None
    ) -> None:
        self._callback = callback
        self._record = Progress(phase, 0, tensors_total, 0, bytes_total)
        self._emit()

    def advance(self, name: str, nbytes: int) -> None:
        """Record one more finished tensor of ``nbytes`` bytes and report it."""
        self._record.tensors_done += 1
        self._record.bytes_done += nbytes
        self._record.current = name
        self._emit()

    def _emit(self) -> None:
        self._record.now = time.monotonic()
        if self._callback is not None:
            self._callback(replace(self._record))
