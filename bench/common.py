"""What every benchmark shares: the run context, machine info, timing helpers, result reports.

A benchmark module exposes `NAME`, `TITLE` and `run(ctx) -> Report`. The report prints a table and
writes `<results>/<NAME>.json` with the machine it ran on, so numbers are never quoted without
their context. Ratios are always measured side by side in one run: this machine is shared and
noisy, so only numbers taken minutes apart are comparable.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from salesflow.config import Settings
    from salesflow.generate import Catalog
    from salesflow.registry import ModelVersion

__all__ = [
    "RESULTS_DIR",
    "Context",
    "PeakRSS",
    "Report",
    "free_port",
    "machine_info",
    "missing_module",
    "percentiles",
    "run_process",
    "timed",
]

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
#: Wide output when not on a terminal (CI logs): tables are read there, not in an 80-column TTY.
console = Console(width=None if sys.stdout.isatty() else 160)


# --- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def timed() -> Iterator[list[float]]:
    """`with timed() as t: ...` then `t[0]` is the block's wall time in seconds."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)


def percentiles(samples: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of `samples` (seconds) as {"p50": ...}; empty input gives {}."""
    if not samples:
        return {}
    ordered = sorted(samples)
    out = {}
    for p in points:
        rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n), at least the first sample
        out[f"p{p}"] = ordered[min(rank, len(ordered)) - 1]
    return out


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def missing_module(*modules: str) -> str | None:
    """None when every module imports; else why not, for a "skipped: ..." row."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return f"{name} not importable ({exc})"
    return None


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


# --- processes -------------------------------------------------------------------------------


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


def vm_hwm_mb(pid: int) -> float:
    """A live process's peak resident memory (VmHWM) in MB; 0 when it is gone."""
    return _status_kb(pid, "VmHWM") / 1024


class PeakRSS:
    """Samples the resident memory of a process and all its descendants (e.g. python + its JVM).

    `peak_mb` is the largest sum seen; sampling every `interval` s misses only very short peaks.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)

    def _tree(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(_children(pid))
        return pids

    def _loop(self) -> None:
        while not self._stop.is_set():
            total = sum(_status_kb(pid, "VmRSS") for pid in self._tree()) / 1024
            self.peak_mb = max(self.peak_mb, total)
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
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise
        seconds = time.perf_counter() - start
    return ProcessRun(
        argv, seconds, process.returncode, out.decode(errors="replace"), log, peak.peak_mb
    )


# --- the run context -------------------------------------------------------------------------


@dataclass
class Context:
    """One benchmark run: mode, folders, the warm SparkSession and cached inputs."""

    smoke: bool
    results_dir: Path
    work: Path
    cache_dir: Path
    _memo: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "smoke" if self.smoke else "full"

    def settings(self, name: str, **overrides: Any) -> Settings:
        """Settings whose local state is a fresh folder `<work>/<name>`."""
        from salesflow.config import Settings

        data_dir = self.work / name
        if data_dir.exists():
            shutil.rmtree(data_dir)
        return Settings(data_dir=data_dir, _env_file=None, **overrides)

    def child_env(self, settings: Settings, **extra: str) -> dict[str, str]:
        """Environment for a salesflow child: ours, every setting as SALESFLOW_*, loopback only."""
        return {**os.environ, **settings.to_env(), "SPARK_LOCAL_IP": "127.0.0.1", **extra}

    def sales_file(
        self, rows: int, seed: int = 0, catalog: Catalog | None = None, tag: str = "default"
    ) -> Path:
        """A generated sales CSV, kept in the cache folder between runs (same seed, same bytes)."""
        from salesflow.generate import generate_sales

        path = self.cache_dir / f"sales-{tag}-{rows}-{seed}.csv"
        if not path.exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            console.print(f"  generating {rows:,} rows ({tag} catalogue) -> {path}")
            generate_sales(path, rows=rows, seed=seed, catalog=catalog)
        return path

    def spark(self) -> SparkSession:
        """The process's warm SparkSession (salesflow's own configuration), started once.

        Asked of `get_spark` each time: a service under test may have stopped and replaced it.
        """
        from salesflow.spark.session import get_spark

        if "spark_settings" not in self._memo:
            self._memo["spark_settings"] = self.settings("spark-session")
            with timed() as t:
                spark = get_spark(self._memo["spark_settings"])
            self._memo["spark_start_s"] = t[0]
            return spark
        return get_spark(self._memo["spark_settings"])

    @property
    def spark_start_s(self) -> float | None:
        """How long starting the warm session took (None until `spark()` was called)."""
        value = self._memo.get("spark_start_s")
        return float(value) if value is not None else None

    def trained_model(self) -> tuple[Settings, ModelVersion]:
        """A model trained in-process on the default 20k-row file, once per run."""
        if "model" not in self._memo:
            from salesflow.registry import ModelRegistry
            from salesflow.spark.train import TrainInput, train

            settings = self.settings("model")
            registry = ModelRegistry(settings.warehouse_path / "models")
            sales = self.sales_file(20_000)
            train(self.spark(), settings, [TrainInput(sales.as_uri())], registry=registry)
            self._memo["model"] = (settings, registry.require_active())
        model: tuple[Settings, ModelVersion] = self._memo["model"]
        return model

    def close(self) -> None:
        """Stop the warm session if one was started."""
        if "spark_settings" in self._memo:
            from salesflow.spark.session import stop_spark

            stop_spark()
            self._memo.pop("spark_settings")


# --- reports ---------------------------------------------------------------------------------


@dataclass
class Target:
    """A goal from the project's issue: met or missed is reported, never a failure."""

    name: str
    value: float | None
    goal: float
    unit: str
    higher_is_better: bool

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    def as_text(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.goal:g} {self.unit}".strip()


def fmt(value: Any) -> str:
    """A compact human form of a number for tables."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2e}"
    return str(value)


@dataclass
class Report:
    """One benchmark's rows, ratios, targets and skips; printed as a table and saved as JSON."""

    name: str
    title: str
    mode: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    ratios: dict[str, float | None] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: list[dict[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def add(self, **row: Any) -> dict[str, Any]:
        self.rows.append(row)
        return row

    def skip(self, label: str, why: str) -> None:
        """A row that could not run; printed as "skipped: <why>"."""
        console.print(f"  [yellow]skipped[/]: {label}: {why}")
        self.skipped.append({"row": label, "why": why})

    def target(
        self, name: str, value: float | None, goal: float, unit: str = "", *, higher: bool = True
    ) -> Target:
        found = Target(name, None if value is None else round(value, 4), goal, unit, higher)
        self.targets.append(found)
        return found

    def headline(self, measurement: str, result: str, target: Target | None = None) -> None:
        """A line for SUMMARY.md (the README's Performance table)."""
        met = "" if target is None or target.met is None else ("met" if target.met else "missed")
        self.summary.append(
            {
                "measurement": measurement,
                "result": result,
                "target": target.as_text() if target else "",
                "met": met,
            }
        )

    def to_dict(self, machine: dict[str, Any]) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "mode": self.mode,
            "duration_s": round(time.perf_counter() - self.started, 1),
            "machine": machine,
            "rows": self.rows,
            "ratios": self.ratios,
            "targets": [{**t.__dict__, "met": t.met} for t in self.targets],
            "skipped": self.skipped,
            "notes": self.notes,
            "summary": self.summary,
        }

    def print(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns.extend(c for c in row if c not in columns)
        table = Table(title=f"{self.title} ({self.mode})", title_justify="left")
        for column in columns:
            table.add_column(column, justify="left" if column == columns[0] else "right")
        for row in self.rows:
            table.add_row(*(fmt(row.get(c)) for c in columns))
        for skip in self.skipped:
            table.add_row(skip["row"], *(["skipped: " + skip["why"][:70]] if columns[1:] else []))
        console.print(table)
        for name, value in self.ratios.items():
            console.print(f"  ratio {name}: {fmt(value)}x")
        for t in self.targets:
            mark = {True: "[green]met[/]", False: "[red]missed[/]", None: "n/a"}[t.met]
            console.print(f"  target {t.name}: {fmt(t.value)} {t.unit} ({t.as_text()}) {mark}")
        for note in self.notes:
            console.print(f"  note: {note}")

    def write(self, results_dir: Path, machine: dict[str, Any]) -> Path:
        """Save as `<results_dir>/<name>.json` (via a temp file, so a crash leaves the old one)."""
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / f"{self.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(machine), indent=2, default=str) + "\n")
        os.replace(tmp, path)
        return path


Runner = Callable[[Context], Report]


def python_argv(*args: str) -> list[str]:
    """Argument list for a child running this interpreter."""
    return [sys.executable, *args]
