"""What every benchmark imports: the run context, timing and statistics helpers (and, re-exported,
the process helpers of `bench.procs` and the reports of `bench.report`).

A benchmark module exposes `NAME`, `TITLE` and `run(ctx) -> Report`. The report prints a table and
writes `<results>/<NAME>.json` with the machine it ran on, so numbers are never quoted without
their context. Ratios are always measured side by side in one run: this machine is shared and
noisy, so only numbers taken minutes apart are comparable.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.procs import PeakRSS, ProcessRun, cpu_seconds, machine_info, run_process, vm_hwm_mb
from bench.report import Report, Target, console, fmt

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from salesflow.config import Settings
    from salesflow.registry import ModelVersion
    from salesflow.sales.catalog import Catalog

__all__ = [
    "BENCH_DIR",
    "RESULTS_DIR",
    "Context",
    "PeakRSS",
    "ProcessRun",
    "Report",
    "Target",
    "console",
    "cpu_seconds",
    "fmt",
    "free_port",
    "machine_info",
    "median",
    "missing_module",
    "percentiles",
    "python_argv",
    "run_process",
    "timed",
    "vm_hwm_mb",
]

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


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


def python_argv(*args: str) -> list[str]:
    """Argument list for a child running this interpreter."""
    return [sys.executable, *args]


# --- the run context -------------------------------------------------------------------------


@dataclass
class Context:
    """One benchmark run: mode, folders, the warm SparkSession and cached inputs."""

    smoke: bool
    results_dir: Path
    work: Path
    cache_dir: Path
    scale: bool = False  # `make bench-scale`: the growth benchmark goes on to 50M rows
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
        from salesflow.sales.generate import generate_sales

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
            self.class_archive()
            self._memo["spark_settings"] = self.settings("spark-session")
            with timed() as t:
                spark = get_spark(self._memo["spark_settings"])
            self._memo["spark_start_s"] = t[0]
            return spark
        return get_spark(self._memo["spark_settings"])

    def class_archive(self) -> None:
        """Make sure Spark's class archive exists before any Spark starts (cold runs map it; a
        process that started Spark first would record it only when it exits)."""
        from salesflow.spark.class_archive import archive_path, record

        settings = self.settings("class-archive")
        if not settings.spark_class_archive or archive_path(settings).is_file():
            return
        console.print("  recording Spark's class archive with a small training (once, ~45 s)")
        if record(settings) is None:
            console.print("  [yellow]no class archive: another process is recording it[/]")

    @property
    def spark_start_s(self) -> float | None:
        """How long starting the warm session took (None until `spark()` was called)."""
        value = self._memo.get("spark_start_s")
        return float(value) if value is not None else None

    def trained_model(self, candidates: Sequence[str] = ()) -> tuple[Settings, ModelVersion]:
        """A model trained in-process on the default 20k-row file, once per run and candidate
        list (empty: the default competition)."""
        key = "model" + "".join(f"-{c}" for c in candidates)
        if key not in self._memo:
            from salesflow.registry import ModelRegistry
            from salesflow.spark.train import TrainInput, train

            extra = {"candidates": list(candidates)} if candidates else {}
            settings = self.settings(key, **extra)
            registry = ModelRegistry(settings.warehouse_path / "models")
            sales = self.sales_file(20_000)
            # force: the version answers even where the gate would have kept it a candidate
            train(
                self.spark(), settings, [TrainInput(sales.as_uri())], registry=registry, force=True
            )
            self._memo[key] = (settings, registry.require_active())
        model: tuple[Settings, ModelVersion] = self._memo[key]
        return model

    def close(self) -> None:
        """Stop the warm session if one was started."""
        if "spark_settings" in self._memo:
            from salesflow.spark.session import stop_spark

            stop_spark()
            self._memo.pop("spark_settings")


Runner = Callable[[Context], Report]
