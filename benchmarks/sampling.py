"""What the benchmarks sample: a process's CPU time and resident set, the machine's busy
time (both psutil), and a Sampler that samples at most every so often."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil


class ProcessUsage:
    """A process's CPU time and memory, from psutil. Linux reports no peak resident set
    through psutil, so `peak_rss_mib` is the largest of the samples `rss_mib()` has taken.
    """

    def __init__(self, pid: int) -> None:
        self.ps = psutil.Process(pid)
        self.peak_rss_mib = 0.0

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far, every thread; 0 once the process has gone."""
        try:
            times = self.ps.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return times.user + times.system

    def rss_mib(self) -> float:
        """Its resident set now, in MiB (0 once it has gone); a sample for the peak too."""
        try:
            rss = round(self.ps.memory_info().rss / 2**20, 1)
        except psutil.NoSuchProcess:
            return 0.0
        self.peak_rss_mib = max(self.peak_rss_mib, rss)
        return rss


class Sampler:
    """Calls `sample` at most every `interval` seconds, however often it is asked: the
    timing loops ask on every turn, and the benchmark's own CPU counts in machine_cores."""

    def __init__(self, sample: Callable[[], object], interval: float = 0.1) -> None:
        self.sample, self.interval, self.next = sample, interval, 0.0

    def __call__(self) -> None:
        if (now := time.monotonic()) >= self.next:
            self.sample()
            self.next = now + self.interval


def machine_busy_seconds() -> float:
    """CPU time all cores have spent busy since boot: user, nice, system, irq and softirq
    (psutil's reading of /proc/stat; not idle, iowait or steal)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq
