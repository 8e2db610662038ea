"""Run the benchmarks: `python -m bench.run [--smoke] [--only NAME ...]`.

Each benchmark prints its table and writes `<results>/<name>.json`; at the end SUMMARY.md is
rebuilt from every JSON in the results folder. The exit code is 1 only when a benchmark crashed:
a missed target is reported, not a failure. `--smoke` uses tiny sizes (CI) and writes under
`bench/results/smoke/` so it never overwrites the full run's numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Context, console, machine_info

#: Every benchmark, in run (and SUMMARY) order; module bench.bench_<name>.
BENCHMARKS: tuple[str, ...] = (
    "training",
    "aggregate",
    "serving",
    "upload",
    "handoff",
    "accuracy",
    "growth",
)
#: Benchmarks too slow for a smoke run (growth trains on millions of rows by design).
FULL_ONLY: frozenset[str] = frozenset({"growth"})
#: Generated inputs are kept here between runs: a 10M-row file takes ~15 s to write.
CACHE_DIR = Path(tempfile.gettempdir()) / "salesflow-bench-cache"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few minutes (CI)")
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="growth goes on to 50M rows (~2.6 GB of CSV; hours on 2 cores; `make bench-scale`)",
    )
    parser.add_argument("--results", type=Path, default=None, help="where JSON results go")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="generated-input cache")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    return parser.parse_args(argv)


def selected(args: argparse.Namespace) -> list[str]:
    """Benchmarks to run: --only as given, else all (full-only ones left out of a smoke run)."""
    if args.only:
        return [name for name in BENCHMARKS if name in args.only]
    return [name for name in BENCHMARKS if not (args.smoke and name in FULL_ONLY)]


def summary_markdown(results_dir: Path) -> str:
    """SUMMARY.md: one markdown table of every benchmark's headline numbers in `results_dir`."""
    found: list[dict[str, Any]] = []
    for name in BENCHMARKS:
        path = results_dir / f"{name}.json"
        if path.exists():
            found.append(json.loads(path.read_text()))
    if not found:
        return "No benchmark results yet: run `make bench`.\n"
    machine = found[-1]["machine"]
    cpus = sorted({str(result["machine"].get("cpu")) for result in found})
    lines = [
        f"Measured on {machine.get('cores')} cores ({' or '.join(cpus)}: each row names its "
        f"host), {(machine.get('ram_mb') or 0) / 1024:.0f} GB RAM, Python "
        f"{machine.get('python')}, Spark {machine.get('spark')}; `make bench` "
        f"({found[-1]['mode']} mode). "
        "Ratios compare variants run side by side in one run; `load` is the 1-minute load "
        "average when the benchmark finished (above the core count, absolute times are "
        "pessimistic).",
        "",
        "| benchmark | measurement | result | target | |",
        "|---|---|---|---|---|",
    ]
    for result in found:
        stamp = result["machine"].get("timestamp", "")[:10]
        load = (result["machine"].get("load_average") or [None])[0]
        cpu = str(result["machine"].get("cpu", "")).split(" Processor")[0]
        label = f"{result['benchmark']} ({result['mode']}, {stamp}, {cpu}, load {load})"
        for line in result.get("summary", []):
            lines.append(
                f"| {label} | {line['measurement']} | {line['result']} | {line['target']} "
                f"| {line['met']} |"
            )
            label = ""
        for skip in result.get("skipped", []):
            lines.append(f"| {label} | {skip['row']} | skipped: {skip['why']} | | |")
            label = ""
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks; 1 if any crashed."""
    args = parse_args(argv)
    # Spark's driver (and any child JVM) resolves and binds to loopback only.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Only errors from libraries and services in-process: the tables are the output.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    # librdkafka logs every refused connection as an error: the supervisor's readiness probes
    # get those by design while a broker starts, and they would drown the tables.
    logging.getLogger("salesflow.kafka.librdkafka").setLevel(logging.CRITICAL)
    results_dir = args.results or (RESULTS_DIR / "smoke" if args.smoke else RESULTS_DIR)
    work = Path(tempfile.mkdtemp(prefix="salesflow-bench-"))
    ctx = Context(
        smoke=args.smoke,
        results_dir=results_dir,
        work=work,
        cache_dir=args.cache,
        scale=args.scale,
    )
    crashed: list[str] = []
    started = time.perf_counter()
    try:
        for name in selected(args):
            console.rule(f"[bold]{name}[/] ({ctx.mode})")
            began = time.perf_counter()
            try:
                module = importlib.import_module(f"bench.bench_{name}")
                report = module.run(ctx)
                report.print()
                path = report.write(results_dir, machine_info())
                console.print(f"  wrote {path} in {time.perf_counter() - began:.0f} s")
            except Exception:
                crashed.append(name)
                console.print(f"[red]benchmark {name} crashed[/]")
                console.print(traceback.format_exc(), markup=False, highlight=False)
    finally:
        ctx.close()
        if args.keep_work:
            console.print(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = results_dir / "SUMMARY.md"
    results_dir.mkdir(parents=True, exist_ok=True)
    summary.write_text(summary_markdown(results_dir))
    console.print(f"wrote {summary}; total {time.perf_counter() - started:.0f} s")
    if crashed:
        console.print(f"[red]crashed: {', '.join(crashed)}[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
