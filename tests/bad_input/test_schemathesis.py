"""Schemathesis against the upload service's and the job server's OpenAPI schemas, in-process (ASGI):
no generated request, valid or not, may get a server error or a status its operation does not
declare.

The services run with the bearer token, a file:// store in a temporary folder and a Kafka port
nothing listens on; the job server gets plain functions instead of Spark. Examples are bounded
(30 per operation, no deadline: the machine is shared) to keep the run under a minute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import status_code_conformance

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.errors import ModelError
from salesflow.services.jobs.app import create_app as create_job_server
from salesflow.services.jobs.engine import PredictOutcome, SparkEngine
from salesflow.services.upload.app import create_app as create_upload_service
from tests.conftest import free_port

#: Generated requests per API operation (30 in all), by generation mode: valid / invalid requests.
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}


@pytest.fixture(scope="module")
def service_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Both services' settings; the lifespans schemathesis starts are stopped afterwards."""
    yield Settings(  # type: ignore[call-arg]
        data_dir=tmp_path_factory.mktemp("schemathesis") / "data",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        max_upload_bytes=1024 * 1024,
        train_requires_upload_record=False,  # no upload service to ask
        _env_file=None,
    )
    shutdown_lifespans()


def _refuse_training(*_: Any, **__: Any) -> Any:
    raise ModelError("training is not part of this test")


def _predict(
    source: Path, *, version: str | None, csv_out: Path | None, per_month: bool = False
) -> PredictOutcome:
    if csv_out is not None:
        csv_out.parent.mkdir(parents=True, exist_ok=True)
        csv_out.write_text("store_id,product_id,period,predicted_quantity\n")
    return PredictOutcome(model_version=version or "v0001", rows=0, records=[])


def upload_schema(settings: Settings) -> Any:
    app = create_upload_service(settings)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def jobs_schema(settings: Settings) -> Any:
    engine = SparkEngine(
        session=lambda: None, stop=lambda: None, train=_refuse_training, predict=_predict
    )
    app = create_job_server(settings, engine=engine, report=lambda *_: None)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def server_errors(schema: Any, headers: dict[str, str]) -> tuple[list[str], Counter[int]]:
    """Run every operation with valid and invalid generated requests: the failures, described,
    and how many answers of each status came back.

    (schemathesis' pytest `from_fixture` loader does not run on pytest 9, hence the explicit loop.)
    """
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in EXAMPLES.items():

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,  # nothing written to .hypothesis/
                phases=[Phase.explicit, Phase.generate],  # no shrinking: it only costs time here
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                response = case.call_and_validate(
                    headers=headers, checks=[not_a_server_error, status_code_conformance]
                )
                statuses[response.status_code] += 1

            try:
                check()
            except Unsatisfiable:  # no parameters or body: nothing invalid to generate
                continue
            except (Exception, FailureGroup) as exc:  # its report names the failing request
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    return failures, statuses


@pytest.mark.slow
def test_the_harness_reports_a_server_error() -> None:
    """A route that fails on some inputs is caught (so a clean run means something)."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: int) -> JSONResponse:
        # (An exception escaping a route also counts: in-process, it reaches the caller.)
        return JSONResponse({"item_id": item_id}, status_code=500 if item_id > 10 else 200)

    failures, statuses = server_errors(schemathesis.openapi.from_asgi("/openapi.json", app), {})
    assert len(failures) == 1 and failures[0].startswith("GET /items/{item_id} (positive)")
    assert "Server error" in failures[0]
    assert statuses[422] > 0  # the invalid requests ran, and were answered properly


@pytest.mark.slow
def test_upload_service_never_answers_5xx(service_settings: Settings) -> None:
    schema = upload_schema(service_settings)
    assert len(list(schema.get_all_operations())) >= 5
    failures, statuses = server_errors(schema, auth_headers(service_settings))
    assert failures == []
    assert statuses[200] > 0 and statuses[400] + statuses[422] > 0, statuses


@pytest.mark.slow
def test_job_server_never_answers_5xx(service_settings: Settings) -> None:
    schema = jobs_schema(service_settings)
    assert len(list(schema.get_all_operations())) >= 8
    failures, statuses = server_errors(schema, auth_headers(service_settings))
    assert failures == []
    assert statuses[200] > 0 and statuses[400] + statuses[422] > 0, statuses
