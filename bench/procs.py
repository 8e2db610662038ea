"""Child processes and this machine: run and time a child, sample its memory, describe the host.

Linux /proc is the source for memory (VmRSS of a process tree, VmHWM of one process) and for the
machine's RAM and CPU model; elsewhere these read as 0 / unknown rather than failing.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "PeakRSS",
    "ProcessRun",
    "cpu_seconds",
    "machine_info",
    "run_process",
    "same_memory",
    "stop_group",
    "vm_hwm_mb",
]

ROOT = Path(__file__).resolve().parent.parent


def _meminfo_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 0)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stderr or done.stdout).strip().splitlines()
    return text[0] if text else "unknown"


def machine_info() -> dict[str, Any]:
    """Where the numbers come from: cores, RAM, CPU, versions, load, commit, time."""
    try:
        import pyspark

        spark_version = pyspark.__version__
    except ImportError:
        spark_version = "not installed"
    commit = _version_of(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_mb": _meminfo_mb(),
        "cpu": _cpu_model(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "spark": spark_version,
        "java": _version_of(["java", "-version"]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "git_commit": commit,
    }


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        for task in tasks:
            text = (task / "children").read_text().split()
            found.extend(int(c) for c in text)
    except OSError:
        pass
    return found


def _status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


#: kcmp(2)'s syscall number by machine, and its KCMP_VM: do two processes share one address space?
_KCMP = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
_KCMP_VM = 1
_libc = ctypes.CDLL(None, use_errno=True) if _KCMP is not None else None


def same_memory(pid: int, other: int) -> bool:
    """Whether `pid` and `other` share one address space; False when the kernel cannot say.

    A child made with CLONE_VM (glibc's posix_spawn, which the JVM uses to start e.g. Hadoop's
    `chmod`) runs in its parent's memory until it execs, and its VmRSS is the parent's: summed,
    a 2.5 GB JVM counted twice for that moment (growth's "peaks" of 5.8 GB were such samples).
    """
    if _libc is None:
        return False
    return int(_libc.syscall(_KCMP, pid, other, _KCMP_VM, 0, 0)) == 0


def _comm(pid: int) -> str:
    """A process's name, version digits dropped ("python3.11" -> "python"); "?" once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().rstrip("0123456789.") or "?"
    except OSError:
        return "?"


def vm_hwm_mb(pid: int) -> float:
    """A live process's peak resident memory (VmHWM) in MB; 0 when it is gone."""
    return _status_kb(pid, "VmHWM") / 1024


def cpu_seconds(pid: int) -> float:
    """A live process's CPU time so far (user + system, all threads) in seconds; 0 when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class PeakRSS:
    """Samples the resident memory of a process and all its descendants (e.g. python + its JVM).

    `peak_mb` is the largest sum seen; sampling every `interval` s misses only very short peaks.
    `peak_by_name`: that sample's memory per process name (e.g. {"python": ..., "java": ...}).
    A child still in its parent's address space (`same_memory`) is not counted again.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mb = 0.0
        self.peak_by_name: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)

    def _tree(self) -> list[int]:
        """The process and its descendants, less those sharing their parent's memory."""
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(c for c in _children(pid) if not same_memory(c, pid))
        return pids

    def _loop(self) -> None:
        while not self._stop.is_set():
            by_name: dict[str, float] = {}
            for pid in self._tree():
                name = _comm(pid)
                by_name[name] = by_name.get(name, 0.0) + _status_kb(pid, "VmRSS") / 1024
            total = sum(by_name.values())
            if total > self.peak_mb:
                self.peak_mb, self.peak_by_name = total, by_name
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class ProcessRun:
    """A finished child process: wall time, output, exit code, peak memory of its tree."""

    argv: list[str]
    seconds: float
    returncode: int
    stdout: str
    stderr_path: Path
    peak_mb: float
    peak_by_name: dict[str, float]  # the peak sample per process name (PeakRSS.peak_by_name)

    def check(self) -> ProcessRun:
        """Raise with the tail of stderr when the child failed."""
        if self.returncode != 0:
            tail = "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(
                f"{' '.join(self.argv[:4])} ... exited {self.returncode}; stderr ends:\n{tail}"
            )
        return self

    def last_json(self) -> Any:
        """The last stdout line that parses as JSON, or the whole stdout as JSON."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            pass
        for line in reversed(self.stdout.strip().splitlines()):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        raise RuntimeError(f"no JSON in the output of {' '.join(self.argv[:4])}")


#: SIGTERM grace before SIGKILL when stopping a child's process group.
STOP_GRACE_S = 10.0


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a child started with `start_new_session` and everything in its group (its JVM too)."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_process(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log: Path,
    timeout: float = 1800.0,
) -> ProcessRun:
    """Run a child to completion (no shell), timing it and sampling its tree's memory.

    stderr goes to `log` (Spark's progress and logs are large); stdout is returned.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, env=env, cwd=cwd, start_new_session=True
        )
        with PeakRSS(process.pid) as peak:
            try:
                out, _ = process.communicate(timeout=timeout)
            except BaseException:  # a timeout, or Ctrl-C (which the child's own session misses)
                stop_group(process)
                raise
        seconds = time.perf_counter() - start
    return ProcessRun(
        argv,
        seconds,
        process.returncode,
        out.decode(errors="replace"),
        log,
        peak.peak_mb,
        peak.peak_by_name,
    )
