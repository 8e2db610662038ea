"""How training grows with the data: wall time and peak memory vs rows, 200 stores x 2,000 products.

Each size is trained by `python -m salesflow.spark.train` in a fresh process (so the peak memory of
python + JVM is that run's alone, sampled from /proc), on a catalogue large enough that the
aggregate and the model grow with the rows. Writes growth.png next to the JSON. Full mode only:
`python -m bench.run --only growth`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import Context, Report, missing_module, python_argv, run_process

NAME = "growth"
TITLE = "Growth: training time and peak memory vs rows (200 stores x 2,000 products)"

SIZES: tuple[int, ...] = (20_000, 200_000, 2_000_000)
STORES, PRODUCTS = 200, 2_000


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
    left.set(xscale="log", xlabel="rows", ylabel="seconds", title="training time")
    left.legend()
    right.plot(x, [r["peak_mb"] for r in rows], "o-", color="tab:red")
    right.set(xscale="log", xlabel="rows", ylabel="MB", title="peak RSS, python + JVM")
    fig.suptitle(f"salesflow training growth, {STORES} stores x {PRODUCTS:,} products")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def run(ctx: Context) -> Report:
    from salesflow.generate import synthetic_catalog

    report = Report(NAME, TITLE, ctx.mode)
    catalog = synthetic_catalog(STORES, PRODUCTS, seed=0)
    done: list[dict[str, Any]] = []
    for rows in SIZES:
        sales = ctx.sales_file(rows, catalog=catalog, tag=f"{STORES}x{PRODUCTS}")
        try:
            done.append(report.add(**train_once(ctx, sales, rows)))
        except RuntimeError as exc:  # a size that fails (e.g. out of memory) is a finding
            lines = [line for line in str(exc).splitlines() if line.strip()]
            report.skip(f"{rows:,} rows", " | ".join(lines[:1] + lines[-1:])[:300])
    for row in done:
        report.headline(
            f"train {row['rows']:,} rows ({STORES}x{PRODUCTS:,} catalogue), new process",
            f"{row['wall_s']:.0f} s, peak {row['peak_mb']:,.0f} MB",
        )
    if len(done) >= 2:
        first, last = done[0], done[-1]
        report.ratios[f"time {last['rows']:,} / {first['rows']:,} rows"] = round(
            last["wall_s"] / first["wall_s"], 1
        )
    if done:
        why = plot(done, ctx.results_dir / "growth.png")
        if why:
            report.skip("growth.png", why)
        else:
            report.notes.append(f"plot: {ctx.results_dir / 'growth.png'}")
    return report
