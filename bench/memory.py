"""Peak resident memory of a child process, sampled with psutil.

(wait4's `ru_maxrss` cannot be used: Linux carries the parent's high-water mark over fork and
exec, so every child reported the bench process's own peak.)
"""

from __future__ import annotations

import threading
from types import TracebackType

import psutil


class PeakRss:
    """`with PeakRss(pid) as peak: ...`; then `peak.mib`: the highest RSS seen, every 20 ms;
    `peak.child_mib`: the highest of any of its child processes (a replay's helpers), and
    `peak.total_mib`: the highest of the process and its children together."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_child = 0
        self.peak_total = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def mib(self) -> float:
        return self.peak / (1 << 20)

    @property
    def child_mib(self) -> float:
        return self.peak_child / (1 << 20)

    @property
    def total_mib(self) -> float:
        return self.peak_total / (1 << 20)

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                own = self.process.memory_info().rss
                children = [self._rss(child) for child in self.process.children(recursive=True)]
            except psutil.Error:
                return
            self.peak = max(self.peak, own)
            self.peak_child = max([self.peak_child, *children])
            self.peak_total = max(self.peak_total, own + sum(children))
            self._done.wait(self.interval)

    @staticmethod
    def _rss(process: psutil.Process) -> int:
        try:
            return int(process.memory_info().rss)
        except psutil.Error:  # it ended between the listing and the reading
            return 0

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(5)
