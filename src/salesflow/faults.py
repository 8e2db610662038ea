"""Fault injection at named points, inert unless `settings.crash_point` names one (fault tests).

Production code calls `reached(settings, point)` where a fault test needs the process to fail;
with `crash_point` unset (the default) the call does nothing. What each point does:

    consumer.after_verify, consumer.after_train   exit the process at once (status EXIT_CODE)
    curate.before_commit                          exit, an upload's folders written, the
                                                  history's ledger not yet replaced
    jobs.after_accept                             freeze the process (SIGSTOP) until SIGCONT
    train.before_publish                          fail a Spark task (the `spark` session given)

A Spark task failing on an executor, not a Python raise, gives the job server the same kind of
error (a Spark job aborted by a failed task) that a crashing executor does.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Literal

from salesflow.config import Settings

__all__ = ["EXIT_CODE", "POINTS", "reached"]

log = logging.getLogger(__name__)

#: The exit status of a process stopped at an exit point, so a test tells it from a real crash.
EXIT_CODE = 70  # EX_SOFTWARE

Action = Literal["exit", "freeze", "spark_task"]
POINTS: dict[str, Action] = {
    "consumer.after_verify": "exit",
    "consumer.after_train": "exit",
    "curate.before_commit": "exit",
    "jobs.after_accept": "freeze",
    "train.before_publish": "spark_task",
}


def reached(settings: Settings, point: str, spark: Any = None) -> None:
    """Fail at `point` if `settings.crash_point` names it; otherwise nothing happens."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; known: {', '.join(POINTS)}")
    if settings.crash_point != point:
        return
    action = POINTS[point]
    if action == "exit":
        log.warning("fault point %s reached: exiting with status %d", point, EXIT_CODE)
        logging.shutdown()
        os._exit(EXIT_CODE)
    elif action == "freeze":
        log.warning("fault point %s reached: stopping until SIGCONT", point)
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        log.warning("fault point %s reached: failing a Spark task", point)
        from pyspark.sql import functions as F  # only when armed: this module needs no Spark

        # `id >= 0` keeps the optimiser from folding raise_error into a driver-side constant.
        error = F.raise_error(F.lit(f"simulated executor failure ({point})"))
        spark.range(1).select(F.when(F.col("id") >= 0, error).alias("never")).collect()
