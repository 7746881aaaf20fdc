"""Exactly-once bookkeeping: which (producer_id, seq) batches the store has already applied."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

#: Applied sequence numbers kept above the first gap, per producer.
MAX_GAP_WINDOW = 4096


@dataclass
class _Window:
    """Every seq up to `contiguous` is applied, plus the scattered ones above it in `above`.

    Producers number batches 0, 1, 2, … and may deliver them out of order (retries, concurrent
    sends), so a high-water mark alone would be wrong; `above` holds only the gaps' far side and
    shrinks as the gaps fill.
    """

    contiguous: int = -1
    above: set[int] = field(default_factory=set)

    def contains(self, seq: int) -> bool:
        return seq <= self.contiguous or seq in self.above

    def add(self, seq: int) -> None:
        if seq <= self.contiguous:
            return
        self.above.add(seq)
        if len(self.above) > MAX_GAP_WINDOW:
            # The oldest gap is a batch its producer gave up on (refused, or lost with a dead
            # process): in-order delivery with a few batches in flight never leaves a gap this
            # old. Close it so the window stays bounded.
            self.contiguous = min(self.above) - 1
        while self.contiguous + 1 in self.above:
            self.contiguous += 1
            self.above.discard(self.contiguous)


class SequenceTracker:
    """Applied sequence numbers per producer, bounded to `max_producers` (least recently seen go).

    A forgotten producer is one that has been silent while `max_producers` others wrote; should it
    ever resend an old batch, that batch would be applied twice. The bound is large (default
    100,000 producers) and every long-lived writer (monitors, callbacks) stays recent.
    """

    def __init__(self, max_producers: int) -> None:
        self._max_producers = max_producers
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def seen(self, producer_id: str, seq: int) -> bool:
        window = self._windows.get(producer_id)
        return window is not None and window.contains(seq)

    def add(self, producer_id: str, seq: int) -> None:
        window = self._windows.get(producer_id)
        if window is None:
            window = self._windows[producer_id] = _Window()
            if len(self._windows) > self._max_producers:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(producer_id)
        window.add(seq)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy, written into the manifest at each seal."""
        return {pid: [w.contiguous, sorted(w.above)] for pid, w in self._windows.items()}

    @classmethod
    def restore(cls, snapshot: dict[str, Any], max_producers: int) -> SequenceTracker:
        tracker = cls(max_producers)
        for producer_id, (contiguous, above) in snapshot.items():
            tracker._windows[producer_id] = _Window(int(contiguous), {int(s) for s in above})
        return tracker
