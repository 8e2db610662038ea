"""How training grows with the data: wall time and peak memory vs rows, 200 stores x 2,000 products.

Each size is trained by `python -m salesflow.spark.train` in a fresh process (so the peak memory of
python + JVM is that run's alone, sampled from /proc), on a catalogue large enough that the
aggregate and the model grow with the rows. Writes growth.png next to the JSON and, from a full
run, to docs/growth.png (docs/performance.md shows it). Full mode only:
`python -m bench.run --only growth` (20k to 20M rows; SALESFLOW_BENCH_GROWTH_MAX_ROWS stops
earlier); `make bench-scale` adds 50M.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_DIR,
    Context,
    Report,
    machine_info,
    missing_module,
    python_argv,
    run_process,
)

NAME = "growth"
TITLE = "Growth: training time and peak memory vs rows (200 stores x 2,000 products)"

SIZES: tuple[int, ...] = (20_000, 200_000, 2_000_000, 20_000_000)
#: Added by `make bench-scale` (--scale): about 2.6 GB of CSV.
SCALE_SIZES: tuple[int, ...] = (50_000_000,)
#: Set to stop at a smaller size when the machine is busy (e.g. 2000000): sizes above it are skipped.
MAX_ROWS_ENV = "SALESFLOW_BENCH_GROWTH_MAX_ROWS"
#: Set to measure only these sizes (e.g. 20000000) and keep the other sizes' rows from the last
#: growth.json (each row says when it was measured): one long size without redoing the short ones.
ONLY_ENV = "SALESFLOW_BENCH_GROWTH_ONLY"
STORES, PRODUCTS = 200, 2_000
#: Where the README's plot lives.
DOCS_PNG = BENCH_DIR.parent / "docs" / "growth.png"


def train_once(ctx: Context, sales: Path, rows: int) -> dict[str, Any]:
    settings = ctx.settings(f"growth-{rows}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run = run_process(
        python_argv("-m", "salesflow.spark.train", sales.as_uri()),
        env=ctx.child_env(settings),
        cwd=settings.data_dir,
        log=settings.data_dir / "stderr.log",
        timeout=3 * 3600,  # 2M rows on 2 cores: minutes; the bound only stops a hung run
    ).check()
    result = run.last_json()
    return {
        "rows": rows,
        "wall_s": run.seconds,
        "train_s": float(result["duration_s"]),
        "peak_mb": run.peak_mb,
        "peak_by_process_mb": {name: round(mb) for name, mb in run.peak_by_name.items()},
        "rows_aggregated": int(result["rows_aggregated"]),
        **{f"{k}_s": v for k, v in result.get("timings", {}).items()},
    }


def plot(rows: list[dict[str, Any]], path: Path) -> str | None:
    """A two-panel PNG (time, memory vs rows); the reason when matplotlib is missing."""
    why = missing_module("matplotlib")
    if why:
        return why
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    x = [r["rows"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(x, [r["wall_s"] for r in rows], "o-", label="wall (new process)")
    left.plot(x, [r["train_s"] for r in rows], "s--", label="train() only")
    if all(r.get("evaluate_s") is not None for r in rows):
        left.plot(
            x,
            [r["evaluate_s"] for r in rows],
            "^:",
            label="of which backtest (final fit alongside)",
        )
    left.set(xscale="log", xlabel="rows", ylabel="seconds", title="training time")
    left.set_ylim(bottom=0)
    left.legend()
    right.plot(x, [r["peak_mb"] for r in rows], "o-", color="tab:red", label="python + JVM")
    if all(r.get("peak_by_process_mb") for r in rows):  # the peak sample's split, when recorded
        for name, style in (("java", "s--"), ("python", "^:")):
            shares = [r["peak_by_process_mb"].get(name, 0) for r in rows]
            right.plot(x, shares, style, label=f"of which {name}")
        right.legend()
    right.set(xscale="log", xlabel="rows", ylabel="MB", title="peak RSS")
    right.set_ylim(bottom=0)
    for r in rows:
        left.annotate(f"{r['wall_s']:.0f} s", (r["rows"], r["wall_s"]), textcoords="offset points",
                      xytext=(0, 6), ha="center")  # fmt: skip
        right.annotate(f"{r['peak_mb']:,.0f} MB", (r["rows"], r["peak_mb"]),
                       textcoords="offset points", xytext=(0, 6), ha="center")  # fmt: skip
    fig.suptitle(f"salesflow training growth, {STORES} stores x {PRODUCTS:,} products")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _finish(ctx: Context, report: Report, done: list[dict[str, Any]]) -> None:
    """Headlines, ratio and plot from the sizes done so far."""
    report.summary.clear()
    report.ratios.clear()
    for row in done:
        report.headline(
            f"train {row['rows']:,} rows ({STORES}x{PRODUCTS:,} catalogue), new process",
            f"{row['wall_s']:.0f} s, peak {row['peak_mb']:,.0f} MB, "
            f"{row['rows_aggregated']:,} monthly rows",
        )
    if len(done) >= 2:
        first, last = done[0], done[-1]
        report.ratios[f"time {last['rows']:,} / {first['rows']:,} rows"] = round(
            last["wall_s"] / first["wall_s"], 1
        )
    if done:
        png = ctx.results_dir / "growth.png"
        why = plot(done, png)
        if why:
            report.skip("growth.png", why)
        else:
            if f"plot: {png}" not in report.notes:
                report.notes.append(f"plot: {png}")
            if not ctx.smoke:
                DOCS_PNG.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, DOCS_PNG)


def _earlier_rows(ctx: Context) -> list[dict[str, Any]]:
    """The rows of the last full growth run (none if there is none)."""
    path = ctx.results_dir / f"{NAME}.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    stamp = data.get("machine", {}).get("timestamp")
    return [{**row, "measured": row.get("measured", stamp)} for row in data.get("rows", [])]


def run(ctx: Context) -> Report:
    from salesflow.sales.catalog import synthetic_catalog

    report = Report(NAME, TITLE, ctx.mode)
    catalog = synthetic_catalog(STORES, PRODUCTS, seed=0)
    done: list[dict[str, Any]] = []
    limit = int(os.environ.get(MAX_ROWS_ENV) or 0)
    sizes = SIZES + (SCALE_SIZES if ctx.scale else ())
    only = {int(n) for n in os.environ.get(ONLY_ENV, "").split(",") if n.strip()}
    if only:
        sizes = tuple(sorted(only))
        done = [r for r in _earlier_rows(ctx) if r["rows"] not in only]
        for row in done:
            report.add(**row)
    for rows in sizes:
        if limit and rows > limit:
            report.skip(f"{rows:,} rows", f"above {MAX_ROWS_ENV}={limit:,}")
            continue
        sales = ctx.sales_file(rows, catalog=catalog, tag=f"{STORES}x{PRODUCTS}")
        try:
            row = {**train_once(ctx, sales, rows), "measured": machine_info()["timestamp"]}
            done.append(report.add(**row))
            done.sort(key=lambda r: r["rows"])
            report.rows.sort(key=lambda r: r["rows"])  # earlier rows (ONLY_ENV) in size order
        except RuntimeError as exc:  # a size that fails (e.g. out of memory) is a finding
            lines = [line for line in str(exc).splitlines() if line.strip()]
            report.skip(f"{rows:,} rows", " | ".join(lines[:1] + lines[-1:])[:300])
        # Written after every size: a run stopped during a long size keeps the smaller ones.
        _finish(ctx, report, done)
        report.write(ctx.results_dir, machine_info())
    return report
