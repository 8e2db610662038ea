"""A real class archive: the first Spark process records it at exit, the next one maps it.

Each step is a new Python process with its own JVM (the test run's session is left alone), on a
class-archive folder of the test's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

#: Starts Spark with the test's folders, runs one job, prints its answer; argv: root, JVM options.
CHILD = """
import json, sys
from pathlib import Path
from salesflow.config import Settings
from salesflow.spark.session import get_spark
root, options = Path(sys.argv[1]), sys.argv[2]
settings = Settings(
    _env_file=None,
    data_dir=root / "data",
    spark_master="local[1]",
    spark_class_archive_dir=root / "archive",
    spark_conf={"spark.driver.extraJavaOptions": options} if options else {},
)
print(json.dumps({"sum": get_spark(settings).range(100).selectExpr("sum(id)").first()[0]}))
"""


def _spark_process(root: Path, java_options: str = "") -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), java_options],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_the_first_process_records_the_archive_and_the_next_one_maps_it(tmp_path: Path) -> None:
    assert _spark_process(tmp_path) == {"sum": 4950}
    # The recorder waited for its JVM: the archive is published whole, nothing else is left.
    files = sorted(p.name for p in (tmp_path / "archive").iterdir())
    assert len(files) == 1 and files[0].endswith(".jsa"), files
    assert (tmp_path / "archive" / files[0]).stat().st_size > 10_000_000

    loads = tmp_path / "class-load.log"
    assert _spark_process(tmp_path, f"-Xlog:class+load=info:file={loads}") == {"sum": 4950}
    log = loads.read_text()
    # Spark's own classes come from the recorded (top) archive, not from their jars.
    assert "org.apache.spark.SparkContext source: shared objects file (top)" in log
    assert "org.apache.spark.sql.SparkSession source: shared objects file (top)" in log
