"""What the benchmarks read about processes from /proc (Linux): CPUs, memory, CPU time."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

__all__ = [
    "CpuMeter",
    "TreeMemorySampler",
    "cpu_count",
    "process_name",
    "process_tree",
    "tree_cpu_seconds",
    "vm_mb",
    "wait_quiet",
]


def cpu_count() -> int:
    """Return the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def vm_mb(pid: int | str = "self", field: str = "VmHWM") -> float:
    """Return a process's peak (VmHWM) or current (VmRSS) resident set in MB, 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pss_mb(pid: int) -> float:
    """Return a process's proportional set size in MB (shared pages split among their
    users, so a sum over processes counts each page once), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class TreeMemorySampler:
    """Samples the summed RSS and PSS of a process tree every ``interval`` s in a thread.

    The sum of each process's VmHWM over-states the tree's peak: the processes do not
    peak at the same moment, and pages they share (forked children share the libraries
    their parent loaded) count in each. The sampled peaks are the tree's at one moment:
    RSS summed (shared pages counted once per process) and PSS summed (counted once).
    ``at_peak`` is each process's PSS in the sample with the highest sum, ``peak_each``
    each process's highest PSS in any sample (both by "pid name", MB). An ``interval`` of
    None samples nothing (the sampler's own CPU stays out of a throughput run).
    """

    def __init__(self, root: int, interval: float | None = 0.2) -> None:
        self.root, self.interval = root, interval
        self.peak_rss_mb = self.peak_pss_mb = 0.0
        self.at_peak: dict[str, float] = {}
        self.peak_each: dict[str, float] = {}
        self._names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _name(self, pid: int) -> str:
        if pid not in self._names:
            self._names[pid] = f"{pid} {process_name(pid)}"
        return self._names[pid]

    def report(self) -> dict[str, Any]:
        """The sampled peaks, as ``pipeline.run_job`` reports them."""
        return {
            "service_rss_sampled_peak_mb": round(self.peak_rss_mb, 1),
            "service_pss_sampled_peak_mb": round(self.peak_pss_mb, 1),
            "service_pss_at_peak_mb": self.at_peak,
            "service_pss_peak_each_mb": {k: round(v, 1) for k, v in self.peak_each.items() if v},
        }

    def _run(self) -> None:
        while self.interval and not self._stop.wait(self.interval):
            pids = process_tree(self.root)
            self.peak_rss_mb = max(self.peak_rss_mb, sum(vm_mb(p, "VmRSS") for p in pids))
            each = {self._name(p): pss_mb(p) for p in pids}
            for name, mb in each.items():
                self.peak_each[name] = max(self.peak_each.get(name, 0.0), mb)
            if sum(each.values()) > self.peak_pss_mb:
                self.peak_pss_mb = sum(each.values())
                self.at_peak = {name: round(mb, 1) for name, mb in each.items() if mb}

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state is index 0)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def own_cpu_seconds(pid: int) -> float:
    """CPU time of one process (all its threads, not its children): ``serve`` without its
    compression processes, so what the event loop and its threads cost."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU time of ``root`` and its living descendants, plus what each has reaped."""
    ticks = 0
    for pid in process_tree(root):
        try:
            ticks += sum(int(v) for v in _stat_fields(pid)[11:15])  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Measures how much CPU *other* processes used while we ran (machine contention).

    Busy time of the whole machine (/proc/stat) minus the CPU time of this process tree
    (including pool workers, the service subprocess and node), divided by the wall time:
    0.0 means we had the machine to ourselves, 1.0 means someone else kept a core busy.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        return time.monotonic(), busy, tree_cpu_seconds(os.getpid())

    def other_load(self) -> float:
        """Return the cores' worth of CPU other processes used since the meter started."""
        wall0, busy0, own0 = self.start
        wall1, busy1, own1 = self._sample()
        return round(max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0), 2)


def wait_quiet(threshold: float = 0.15, timeout: float = 60.0) -> float:
    """Wait (up to ``timeout`` s) until other processes use under ``threshold`` cores for
    a second; return the load seen last. Shared machines: see benchmarks/README.md."""
    deadline = time.monotonic() + timeout
    while True:
        meter = CpuMeter()
        time.sleep(1.0)
        load = meter.other_load()
        if load < threshold or time.monotonic() > deadline:
            return load


def process_tree(root: int) -> list[int]:
    """Return ``root`` and all its living descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def process_name(pid: int) -> str:
    """Return the first words of a process's command line."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(Path(a.decode()).name if i == 0 else a.decode() for i, a in enumerate(args[:3]))
