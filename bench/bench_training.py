"""Training wall time: the original project's job vs salesflow cold (new JVM) vs salesflow warm.

(a) seed-style: bench/seed_style_job.py in a new JVM with Spark's defaults (see its docstring);
(b) salesflow cold: `python -m salesflow.spark.train FILE` in a new process and JVM, which maps
Spark's class archive (salesflow.spark.class_archive; recorded once per machine before any run);
(c) salesflow warm: `train()` in this process on the already-started session, after the job
server's JIT warm-up (salesflow.spark.warmup) and one run of the measured file;
(d) salesflow cold without the class archive (SALESFLOW_SPARK_CLASS_ARCHIVE=false), for its share;
(e) salesflow cold with the full JIT (SALESFLOW_SPARK_JIT=full): (b) gets the quick one (C1 only),
which spark_jit "auto" picks for a one-shot job under 256 MB, so (e) shows what that saves.
All five run on the same generated file one after another, so the ratios share the machine's
state. Stage timings come from the jobs themselves (TrainResult.timings, the seed job's JSON):
startup (interpreter, imports, JVM and session; 0 warm) / read+clean+aggregate / evaluate (the
rolling-origin backtest refits, conformal intervals and the promotion gate; the seed job has none) /
fit (the wait for the final fit, which runs alongside the backtest; `final_fit` is its own fit
+ save time) / save. `plain_s` is the wall time without `evaluate`, the final fit counted in full:
the same work the seed job does, but timed while sharing the cores with the backtest refits, so
seed / plain understates the like-for-like ratio; seed / wall is the ratio with salesflow's checks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, Context, Report, console, median, python_argv, run_process

NAME = "training"
TITLE = "Training: seed-style vs salesflow cold vs salesflow warm"

#: Row counts per mode; 20k is the generator's default file, the size the targets are set for.
SIZES = {"smoke": (20_000,), "full": (20_000, 2_000_000, 10_000_000)}
#: Measured repetitions per size (after one warm-up for the warm variant); medians are reported.
REPS = {"smoke": {20_000: 1}, "full": {20_000: 3, 2_000_000: 1, 10_000_000: 1}}
#: Warm runs: the first after the warm-up is the slowest (3.9-4.2 s vs 3.1-3.4 s for the ones after,
#: measured 2026-12-04), so even the smoke run reports the median of three.
WARM_REPS = {"smoke": {20_000: 3}, "full": {20_000: 5, 2_000_000: 2, 10_000_000: 1}}
#: Stages of the jobs, in order. "startup" is the wall time outside the job's own stages: the
#: interpreter, imports, JVM and SparkSession start (and the JVM's stop); 0 for the warm variant.
STAGES = ("startup", "read_clean_aggregate", "evaluate", "fit", "save", "final_fit")
#: Goals from the project's issue, for the 20k-row file, and the warm time for 2M rows.
TARGET_WARM_RATIO, TARGET_COLD_RATIO, TARGET_WARM_S = 10.0, 2.5, 5.0
TARGET_WARM_2M_S = 8.0


def seed_style(ctx: Context, sales: Path, rows: int, rep: int) -> dict[str, Any]:
    """The original job in a new JVM; wall time measured here, stages by the job."""
    folder = ctx.work / f"seed-{rows}-{rep}"
    folder.mkdir(parents=True, exist_ok=True)
    run = run_process(
        python_argv(str(BENCH_DIR / "seed_style_job.py"), str(sales), str(folder / "model")),
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},  # Spark's UI binds to loopback too
        cwd=folder,  # Spark's default derby.log / spark-warehouse land in the scratch folder
        log=folder / "stderr.log",
    ).check()
    out = run.last_json()
    timings = {k: v for k, v in out["timings"].items() if k != "session_start"}
    timings["startup"] = run.seconds - sum(timings.values())
    return {"wall_s": run.seconds, "peak_mb": run.peak_mb, **timings, "agg": out["rows_aggregated"]}


def salesflow_cold(
    ctx: Context, sales: Path, rows: int, rep: int, **overrides: Any
) -> dict[str, Any]:
    """`python -m salesflow.spark.train` in a new process: JVM start-up included (mapping the
    class archive, which `Context.spark` made sure exists)."""
    settings = ctx.settings(f"cold-{rows}-{rep}", **overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run = run_process(
        python_argv("-m", "salesflow.spark.train", sales.as_uri()),
        env=ctx.child_env(settings),
        cwd=settings.data_dir,
        log=settings.data_dir / "stderr.log",
    ).check()
    result = run.last_json()
    timings = dict(result.get("timings", {}))
    timings["startup"] = run.seconds - float(result["duration_s"])
    return {
        "wall_s": run.seconds,
        "peak_mb": run.peak_mb,
        **timings,
        "agg": result["rows_aggregated"],
    }


def salesflow_cold_no_archive(ctx: Context, sales: Path, rows: int, rep: int) -> dict[str, Any]:
    """The cold run with SALESFLOW_SPARK_CLASS_ARCHIVE=false: what the class archive saves."""
    return salesflow_cold(ctx, sales, rows, rep, spark_class_archive=False)


def salesflow_cold_full_jit(ctx: Context, sales: Path, rows: int, rep: int) -> dict[str, Any]:
    """The cold run with SALESFLOW_SPARK_JIT=full (C2 too): what the quick JIT saves."""
    return salesflow_cold(ctx, sales, rows, rep, spark_jit="full")


def salesflow_warm(ctx: Context, sales: Path, rows: int, rep: int) -> dict[str, Any]:
    """`train()` on this process's warm session, on a fresh warehouse (nothing is cached)."""
    from salesflow.registry import ModelRegistry
    from salesflow.spark.train import TrainInput, train

    settings = ctx.settings(f"warm-{rows}-{rep}")
    result = train(
        ctx.spark(),
        settings,
        [TrainInput(sales.as_uri())],
        registry=ModelRegistry(settings.warehouse_path / "models"),
    )
    return {
        "wall_s": result.duration_s,
        **result.timings,
        "startup": 0.0,
        "agg": result.rows_aggregated,
    }


def _plain(run: dict[str, Any]) -> float:
    """Wall time without the backtest: the final fit, which runs alongside it, counts in full."""
    overlapped = (run.get("final_fit") or 0.0) - (run.get("fit") or 0.0)
    return run["wall_s"] - (run.get("evaluate") or 0.0) + max(overlapped, 0.0)


def _median_row(variant: str, rows: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": variant, "rows": rows, "runs": len(runs)}
    row["wall_s"] = median([r["wall_s"] for r in runs])
    for stage in STAGES:
        values = [r[stage] for r in runs if stage in r]
        row[f"{stage}_s"] = median(values) if values else None
    row["plain_s"] = median([_plain(r) for r in runs])
    if any("peak_mb" in r for r in runs):
        row["peak_mb"] = max(r.get("peak_mb", 0.0) for r in runs)
    row["rows_aggregated"] = runs[-1]["agg"]
    return row


def run(ctx: Context) -> Report:
    report = Report(NAME, TITLE, ctx.mode)
    report.notes.append(
        "seed-style = the original job (Spark defaults: 200 shuffle partitions, inferSchema, "
        "cache()); it does no validation, reject accounting or holdout evaluation, which "
        "salesflow's times include, so the ratios are conservative."
    )
    spark_started_here = ctx.spark_start_s is None
    ctx.spark()
    if spark_started_here and ctx.spark_start_s is not None:
        report.notes.append(f"warm session start-up (once per server): {ctx.spark_start_s:.1f} s")
    from salesflow.spark.warmup import WARMUP_ROWS, WarmUp

    # The warm variant is the job server's session: it runs its JIT warm-up after start.
    settings = ctx.settings("jit-warmup")
    warm_up = WarmUp(settings, settings.jobs_jit_warmup_runs)
    console.print(f"  the job server's JIT warm-up: {warm_up.runs} small trainings")
    warm_up.run(ctx.spark())
    report.notes.append(
        f"warm = the job server's session after its JIT warm-up (salesflow.spark.warmup: "
        f"{len(warm_up.done)} trainings of a {WARMUP_ROWS:,}-row file, "
        f"{sum(warm_up.done):.0f} s in the background after start: "
        + ", ".join(f"{s:.1f}" for s in warm_up.done)
        + " s) and one training of the measured file"
    )
    console.print("  warming up the in-process session with one training run")
    ctx.trained_model()  # the warm-up run (the default competition)

    for rows in SIZES[ctx.mode]:
        sales = ctx.sales_file(rows)
        reps = REPS[ctx.mode][rows]
        plan = {
            "seed-style (new JVM)": (seed_style, reps),
            "salesflow cold (new JVM)": (salesflow_cold, reps),
            "salesflow warm (in-process)": (salesflow_warm, WARM_REPS[ctx.mode][rows]),
            "salesflow cold, no class archive": (salesflow_cold_no_archive, reps),
            "salesflow cold, full JIT": (salesflow_cold_full_jit, reps),
        }
        variants: dict[str, list[dict[str, Any]]] = {}
        for name, (variant, count) in plan.items():
            variants[name] = []
            for i in range(count):
                variants[name].append(variant(ctx, sales, rows, i))
                console.print(f"  {name}, {rows:,} rows: {variants[name][-1]['wall_s']:.1f} s")
        medians = {name: _median_row(name, rows, runs) for name, runs in variants.items()}
        for row in medians.values():
            report.add(**row)
        seed, cold, warm, bare, full_jit = (m["wall_s"] for m in medians.values())
        _, cold_plain, warm_plain, _, _ = (m["plain_s"] for m in medians.values())
        warm_ratio, cold_ratio = seed / warm, seed / cold
        report.ratios[f"seed/warm {rows:,} rows"] = round(warm_ratio, 2)
        report.ratios[f"seed/cold {rows:,} rows"] = round(cold_ratio, 2)
        report.ratios[f"seed/warm plain fit {rows:,} rows"] = round(seed / warm_plain, 2)
        report.ratios[f"seed/cold plain fit {rows:,} rows"] = round(seed / cold_plain, 2)
        if rows == 20_000:
            t_warm = report.target("seed/warm, 20k rows", warm_ratio, TARGET_WARM_RATIO, "x")
            t_cold = report.target("seed/cold, 20k rows", cold_ratio, TARGET_COLD_RATIO, "x")
            t_secs = report.target(
                "warm training, 20k rows", warm, TARGET_WARM_S, "s", higher=False
            )
            report.headline(
                "training 20k rows: seed-style / salesflow warm",
                f"{seed:.1f} s / {warm:.1f} s = {warm_ratio:.1f}x",
                t_warm,
            )
            report.headline(
                "training 20k rows: seed-style / salesflow cold",
                f"{seed:.1f} s / {cold:.1f} s = {cold_ratio:.1f}x",
                t_cold,
            )
            report.headline("warm training, 20k rows", f"{warm:.2f} s", t_secs)
            report.headline(
                "cold 20k rows without / with the class archive",
                f"{bare:.1f} s / {cold:.1f} s ({seed / bare:.1f}x / {cold_ratio:.1f}x seed-style)",
            )
            report.headline(
                "cold 20k rows with the full / the quick JIT",
                f"{full_jit:.1f} s / {cold:.1f} s "
                f"({seed / full_jit:.1f}x / {cold_ratio:.1f}x seed-style)",
            )
            report.headline(
                "20k rows without the backtest (final fit timed under its contention): "
                "seed / cold / warm",
                f"{seed:.1f} s / {cold_plain:.1f} s / {warm_plain:.1f} s = "
                f"{seed / cold_plain:.1f}x cold, {seed / warm_plain:.1f}x warm",
            )
            stages = medians["salesflow warm (in-process)"]
            report.headline(
                "warm 20k stages: read+aggregate / evaluate (backtest) / fit wait / save; "
                "final fit+save (alongside the backtest)",
                " / ".join(
                    f"{stages.get(f'{k}_s') or 0.0:.1f} s"
                    for k in ("read_clean_aggregate", "evaluate", "fit", "save", "final_fit")
                ),
            )
        else:
            report.headline(
                f"training {rows:,} rows: seed / cold / warm",
                f"{seed:.0f} s / {cold:.0f} s / {warm:.1f} s ({warm_ratio:.1f}x warm)",
                report.target("warm training, 2M rows", warm, TARGET_WARM_2M_S, "s", higher=False)
                if rows == 2_000_000
                else None,
            )
    return report
