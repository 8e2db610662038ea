"""The training job: sales files in, a new model version per granularity out.

curate (salesflow.spark.curate: read, validate, account for rejects, append to the curated
histories once per file checksum) -> per granularity (salesflow.spark.train_granularity: read the
whole history -> rolling-origin backtest and promotion gate -> fit -> publish). With granularity
`both` the month model is trained first, then the day model from the same read of each file, and
the day model records the coherence of its daily forecasts with the month model's. A failed run
creates no version and leaves the active models alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

from salesflow.config import Settings, get_settings
from salesflow.errors import InputError, SalesflowError
from salesflow.registry import ModelRegistry
from salesflow.spark import backtest
from salesflow.spark.candidates import PIPELINES
from salesflow.spark.curate import TrainInput, curate
from salesflow.spark.python_daemon import start_python_workers
from salesflow.spark.session import get_spark, input_bytes, input_categories
from salesflow.spark.train_context import Progress, TrainOptions, TrainResult, TrainRun
from salesflow.spark.train_granularity import Fitted, train_granularity

__all__ = ["TrainInput", "TrainResult", "granularities", "main", "train"]

log = logging.getLogger(__name__)


def granularities(settings: Settings) -> tuple[str, ...]:
    """The granularities a run trains, in order: `both` is month then day."""
    return ("month", "day") if settings.granularity == "both" else (settings.granularity,)


def train(
    spark: SparkSession,
    settings: Settings,
    inputs: Sequence[TrainInput],
    *,
    registry: ModelRegistry | None = None,
    progress: Progress | None = None,
    actor: str = "salesflow.train",
    activate: bool = True,
    force: bool = False,
    fit_transform: backtest.FitTransform | None = None,
    only: bool = False,
) -> TrainResult:
    """Learn from `inputs` plus the curated history (no inputs: the history as it is); publish a
    new version, active if it passes.

    The promotion gate (salesflow.spark.promotion) activates the version when its backtest beats the
    seasonal-naive forecast and the active version of the same granularity; `force` activates it
    anyway, `activate=False` never does. `fit_transform` alters every frame the candidate is
    fitted on (tests only). `only` trains on `inputs` alone, in a history of their own that is
    deleted afterwards: the curated history is neither read nor changed (their rows add up, mode
    append, unless an input says otherwise). With settings.granularity `both` the result is the
    month run's, with the day run's result (and its coherence check) in `also`.
    """
    if not inputs and only:
        raise InputError("nothing to train on: give at least one sales file")
    if only:
        inputs = [dataclasses.replace(i, mode=i.mode or "append") for i in inputs]
    with _history(settings, only) as history:
        run = TrainRun(
            spark,
            settings,
            registry or ModelRegistry(settings.warehouse_path / "models"),
            progress or (lambda _stage: None),
            TrainOptions(actor, activate, force, fit_transform, history),
        )
        return _train(run, inputs)


@contextmanager
def _history(settings: Settings, only: bool) -> Iterator[Path | None]:
    """None (the curated history), or with `only` a history of the run's own, then deleted."""
    if not only:
        yield None
        return
    settings.warehouse_path.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".only-", dir=settings.warehouse_path))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _train(run: TrainRun, inputs: Sequence[TrainInput]) -> TrainResult:
    grains = granularities(run.settings)
    if any(c not in PIPELINES for c in run.settings.candidates):
        start_python_workers(run.spark)  # statistical candidates will need them: import meanwhile
    sources = curate(run, inputs)
    results: list[TrainResult] = []
    month: Fitted | None = None
    for grain in grains:
        # The run's stage timings are the first granularity's; a later one times its own.
        this_run = run if not results else dataclasses.replace(run, timings={})
        result, fitted = train_granularity(this_run, grain, sources, month)
        month = fitted if grain == "month" else month
        results.append(result)
    first = results[0]
    first.also = [r.to_dict() for r in results[1:]]
    first.duration_s = round(time.perf_counter() - run.started, 3)
    return first


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m salesflow.spark.train URL [URL...]`: train on sales files, print the result."""
    parser = argparse.ArgumentParser(
        prog="python -m salesflow.spark.train", description=main.__doc__
    )
    parser.add_argument("urls", nargs="+", help="sales CSVs: paths, file:// or s3:// URLs")
    parser.add_argument(
        "--force", action="store_true", help="activate the new version even if the gate says no"
    )
    parser.add_argument(
        "--mode", choices=["replace", "append", "reject"], help="history mode (default: setting)"
    )
    parser.add_argument(
        "--only", action="store_true", help="train on these files alone, history untouched"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        result = train(
            get_spark(
                settings,
                reads=input_bytes(args.urls),
                categories=input_categories(args.urls),
            ),
            settings,
            [TrainInput(url, mode=args.mode) for url in args.urls],
            progress=lambda stage: print(f"... {stage}", file=sys.stderr),
            force=args.force,
            only=args.only,
        )
    except SalesflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
