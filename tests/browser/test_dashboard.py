"""The dashboard in a real browser over the real system: log in, upload through the page, watch it
train (month and day models: granularity both), and check what the forecast explorer draws, by
month and by day, against the data and the forecast API.

Playwright drives Debian's chromium (/usr/bin/chromium, installed by `make test`'s browser-deps step);
Playwright's own browser download is never used. Screenshots go to the test's temporary folder;
`make screenshot` sets SALESFLOW_SCREENSHOT_TO to refresh the README's picture from this test.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
from collections import defaultdict
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from salesflow.clients.dashboard import login_link
from salesflow.clients.jobs import JobServerClient
from salesflow.sales.generate import generate_sales
from salesflow.services.dashboard.app import dashboard_url
from salesflow.services.dashboard.session import COOKIE
from tests.browser.checks import (
    check_a_failed_upload,
    check_accuracy_per_series,
    check_explorer_follows_the_active_model,
    check_export_all_series,
    check_focus_kept_across_refreshes,
    check_phone_layout,
    check_table_starts_at_the_forecast,
)
from tests.conftest import free_port
from tests.fixtures.system import running_system

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: Where `make screenshot` wants the explorer's picture (unset: it stays in the tmp folder).
SCREENSHOT_TO = os.environ.get("SALESFLOW_SCREENSHOT_TO")
#: Rows in the uploaded file: enough for 51 months of history, quick to train. The default catalogue
#: has 3 stores x 3 products, so the zero-filled daily history is only ~14k day cells.
ROWS = 5_000
#: Training 5k rows by month and by day with backtests takes a few minutes on a busy 2-core
#: machine; this is the ceiling.
TRAIN_TIMEOUT_MS = 420_000
#: What the explorer's day view draws (web/forecast.js DAY_WINDOW and DAY_HORIZON).
DAY_WINDOW = 90
DAY_HORIZON = 28
#: A phone-sized window width, in CSS pixels.
NARROW = 420
#: A page update after an action (a poll is at most 1-5 s away).
UI_TIMEOUT_MS = 30_000


def monthly_actuals(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(store_id, product_id) -> "YYYY-MM" -> summed quantity, straight from the CSV."""
    totals: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            totals[(row["store_id"], row["product_id"])][row["date"][:7]] += float(row["quantity"])
    return totals


def daily_actuals(path: Path, store: str, product: str) -> dict[str, float]:
    """ "YYYY-MM-DD" -> summed quantity of one store/product, straight from the CSV."""
    totals: dict[str, float] = defaultdict(float)
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if (row["store_id"], row["product_id"]) == (store, product):
                totals[row["date"][:10]] += float(row["quantity"])
    return totals


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def data_values(page: Any, selector: str, attribute: str = "data-value") -> dict[str, float]:
    """period (month or day) -> number of every element matching `selector` with `attribute`."""
    pairs = page.eval_on_selector_all(
        selector,
        f"els => els.map(e => [e.closest('[data-period]').dataset.period, "
        f"e.getAttribute('{attribute}')])",
    )
    return {month: float(value) for month, value in pairs if value not in (None, "")}


def test_upload_train_and_explore_the_forecast(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs it (its browser-deps step runs "
            "`apt-get install -y chromium`); or install it yourself with that command"
        )
    from playwright.sync_api import expect, sync_playwright

    sales = tmp_path / "sales.csv"
    generate_sales(sales, rows=ROWS, seed=11)
    actuals = monthly_actuals(sales)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with (
        # promotion_gate off: the day model is made active whatever its backtest on this small
        # file says, so the explorer's month/day switch is there to test. A 5-tree forest and two
        # backtest windows (instead of 20 and 3) keep the two trainings cheap: the page, not the
        # model, is under test, and two windows still shade the chart.
        running_system(
            tmp_path / "system",
            dashboard_port=free_port(),
            granularity="both",
            promotion_gate=False,
            num_trees=5,
            backtest_windows=2,
        ) as system,
        sync_playwright() as playwright,
    ):
        settings = system.settings
        base = dashboard_url(settings)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            # Without a session the page sends the browser to the help page.
            page.goto(f"{base}/")
            assert page.url == f"{base}/welcome"
            expect(page.get_by_text("salesflow up", exact=False).first).to_be_visible()

            # The login link sets an HttpOnly, SameSite=Strict cookie and lands on the overview.
            page.goto(login_link(settings))
            assert page.url.startswith(f"{base}/")
            expect(page.locator("#h-overview")).to_be_visible()
            cookie = next(c for c in context.cookies() if c["name"] == COOKIE)
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            token = settings.auth_token.get_secret_value() if settings.auth_token else ""
            assert token and token not in page.content()
            assert token not in page.evaluate("document.cookie")
            # dashboard, upload service, job server, broker, consumer: none of them down.
            expect(page.locator("#service-health li")).to_have_count(5, timeout=UI_TIMEOUT_MS)
            expect(page.locator("#service-health li.bad")).to_have_count(0)

            # Upload through the page's file input, then follow it until it has trained.
            page.goto(f"{base}/#/upload")
            page.set_input_files("#file-input", str(sales))
            expect(page.locator("#upload-progress")).to_have_js_property("value", 100)
            status = page.locator("#upload-status")
            expect(status).to_have_attribute("data-status", "trained", timeout=TRAIN_TIMEOUT_MS)
            expect(page.locator("#upload-trained")).to_contain_text("Trained model v0001")
            expect(page.locator("#preview-facts")).to_contain_text(f"{ROWS:,}")
            page.screenshot(path=str(shots / "upload.png"), full_page=True)

            upload_id = page.locator("#follow-id").inner_text()
            record = system.wait_terminal(upload_id, timeout=10)
            assert record["status"] == "trained" and record["model_version"] == "v0001"

            # The forecast explorer, one store and one product.
            store, product = sorted(actuals)[0]
            page.goto(f"{base}/#/forecast?store={store}&product={product}")
            chart = page.locator("svg.monthly-chart")
            expect(chart.locator("circle.point.forecast")).to_have_count(12, timeout=UI_TIMEOUT_MS)
            expected = actuals[(store, product)]
            drawn = data_values(page, "svg.monthly-chart circle.point.actual")
            assert drawn.keys() == expected.keys()  # a point per month of history
            assert all(close(drawn[m], expected[m]) for m in expected), (drawn, expected)

            with JobServerClient(settings) as client:
                api = {
                    month: client.forecast(store, product, month=month)["answers"][0]
                    for month in data_values(page, "svg.monthly-chart circle.point.forecast")
                }
            first_month = min(api)
            assert first_month > max(expected)  # the forecast starts after the history
            intervals = [a.get("intervals", {}).get("0.8") for a in api.values()]
            if all(pair and pair[0] is not None for pair in intervals):
                expect(chart.locator("path.band[data-level='0.8']")).to_have_count(1)
            if all(a.get("intervals", {}).get("0.95") for a in api.values()):
                expect(chart.locator("path.band-wide[data-level='0.95']")).to_have_count(1)
            expect(chart.locator("text.axis-title")).to_have_text("units / month")
            table = page.locator("#forecast-numbers")
            shown = data_values(page, "#forecast-numbers td[data-col='forecast']")
            assert shown.keys() == api.keys()
            for month, answer in api.items():
                assert close(shown[month], answer["predicted_quantity"]), month
                text = table.locator(
                    f"tr[data-month='{month}'] td[data-col='forecast']"
                ).inner_text()
                assert text == f"{answer['predicted_quantity']:,.1f}"
            lows = data_values(page, "#forecast-numbers td[data-col='lo']")
            for month, answer in api.items():
                pair = answer.get("intervals", {}).get("0.8")
                if pair and pair[0] is not None:
                    assert close(lows[month], pair[0]), month
            page.screenshot(path=str(shots / "forecast-explorer.png"), full_page=False)
            if SCREENSHOT_TO:
                shutil.copyfile(shots / "forecast-explorer.png", SCREENSHOT_TO)
            check_table_starts_at_the_forecast(page, len(expected))

            # The CSV download holds the same numbers as the table.
            with page.expect_download() as download_info:
                page.locator("#download-csv").click()
            downloaded = Path(download_info.value.path()).read_text(encoding="utf-8")
            rows = {r["month"]: r for r in csv.DictReader(io.StringIO(downloaded))}
            for month, answer in api.items():
                assert close(float(rows[month]["predicted_quantity"]), answer["predicted_quantity"])
            assert close(float(rows[min(expected)]["actual_quantity"]), expected[min(expected)])

            check_day_view(page, settings, sales, store, product, shots)

            # Back to months with the keyboard: the month chart is drawn again.
            page.locator("#granularity-day").focus()
            page.keyboard.press("ArrowLeft")
            expect(page.locator("#granularity-month")).to_be_checked()
            expect(chart.locator("circle.point.forecast")).to_have_count(12, timeout=UI_TIMEOUT_MS)
            expect(page.locator("svg.daily-chart")).to_have_count(0)

            # Totals: one point per month, both bands, the sums of the series' bounds (said so).
            page.select_option("#store-select", "all")
            page.select_option("#product-select", "all")
            expect(page.locator("#forecast-note")).to_contain_text("sum of the series' bounds")
            expect(chart.locator("path.band[data-level='0.8']")).to_have_count(1)
            expect(chart.locator("path.band-wide[data-level='0.95']")).to_have_count(1)
            all_months = {m for series in actuals.values() for m in series}
            assert len(data_values(page, "svg.monthly-chart circle.point.actual")) == len(
                all_months
            )

            # Models: the new version is active, with its metrics; a narrow window still reads.
            page.goto(f"{base}/#/models")
            expect(page.locator("#models-table tr[data-version='v0001']")).to_contain_text(
                "active (month)"
            )
            day_row = page.locator("#models-table tr[data-version='v0002']")
            expect(day_row).to_contain_text("active (day)")
            expect(page.locator("#models-active")).to_contain_text("day v0002")
            day_row.click()
            expect(page.locator("#coherence-detail")).to_contain_text(
                "Coherence with month model v0001", timeout=UI_TIMEOUT_MS
            )
            # The model competition's leaderboard: every candidate, the winner named.
            page.locator("#models-table tr[data-version='v0001']").click()
            board = page.locator("#leaderboard")
            expect(board).to_contain_text("Model competition:", timeout=UI_TIMEOUT_MS)
            expect(board.locator("tr:has(td)")).to_have_count(len(settings.candidates))

            check_accuracy_per_series(page, base)
            check_explorer_follows_the_active_model(page, base, settings, store, product)
            check_export_all_series(page, base, tmp_path, set(actuals))
            check_focus_kept_across_refreshes(page, base)
            check_phone_layout(page, base, shots)
            page.set_viewport_size({"width": 1280, "height": 800})
            check_a_failed_upload(page, base, tmp_path)
            page.set_viewport_size({"width": NARROW, "height": 900})
            page.goto(f"{base}/#/overview")
            expect(page.locator("#active-model-stats")).to_have_attribute(
                "data-version", "v0001", timeout=UI_TIMEOUT_MS
            )
            page.screenshot(path=str(shots / "overview-narrow.png"), full_page=True)
            assert page_errors == []
        finally:
            browser.close()


def check_day_view(
    page: Any, settings: Any, sales: Path, store: str, product: str, shots: Path
) -> None:
    """Switch to days with the keyboard; check points, band, actuals, table and CSV by day."""
    from playwright.sync_api import expect

    switch = page.locator("#granularity-switch")
    expect(switch).to_be_visible()
    expect(page.locator("#granularity-month")).to_be_checked()
    page.locator("#granularity-month").focus()
    page.keyboard.press("ArrowRight")  # radio buttons: the arrow keys move the choice
    expect(page.get_by_label("Day", exact=True)).to_be_checked()
    chart = page.locator("svg.daily-chart")
    expect(chart.locator("circle.point.forecast")).to_have_count(DAY_HORIZON, timeout=UI_TIMEOUT_MS)
    expect(chart.locator("path.band[data-level='0.8']")).to_have_count(1)
    assert "view=day" in page.url

    with JobServerClient(settings) as client:
        day_model = client.models()["active_by_granularity"]["day"]
        days = sorted(data_values(page, "svg.daily-chart circle.point.forecast"))
        api = {day: client.forecast(store, product, date=day) for day in days}
    last_learned = date.fromisoformat(
        next(a for a in api.values())["lineage"]["date_range"]["last"][:10]
    )
    assert days == [(last_learned + timedelta(days=n)).isoformat() for n in range(1, 29)]
    assert all(body["model_version"] == day_model for body in api.values())
    assert all(body["granularity"] == "day" for body in api.values())
    answers = {day: body["answers"][0] for day, body in api.items()}

    # The last DAY_WINDOW days of this series' history, days without sales drawn as 0.
    sold = daily_actuals(sales, store, product)
    last = date.fromisoformat(max(sold))
    window = [(last - timedelta(days=n)).isoformat() for n in range(DAY_WINDOW - 1, -1, -1)]
    drawn = data_values(page, "svg.daily-chart circle.point.actual")
    assert sorted(drawn) == window
    assert all(close(drawn[d], sold.get(d, 0.0)) for d in window), drawn

    shown = data_values(page, "#forecast-numbers td[data-col='forecast']")
    lows = data_values(page, "#forecast-numbers td[data-col='lo']")
    highs = data_values(page, "#forecast-numbers td[data-col='hi']")
    assert shown.keys() == answers.keys()
    for day, answer in answers.items():
        assert close(shown[day], answer["predicted_quantity"]), day
        low, high = answer["intervals"]["0.8"]
        assert close(lows[day], low) and close(highs[day], high), day
    page.screenshot(path=str(shots / "forecast-explorer-day.png"), full_page=False)

    # A narrow window: the chart is redrawn to fit, its day labels do not overlap.
    page.set_viewport_size({"width": NARROW, "height": 900})
    page.wait_for_function(
        f"() => document.querySelector('svg.daily-chart')?.getBoundingClientRect().width <= {NARROW}"
    )
    expect(chart.locator("circle.point.forecast")).to_have_count(DAY_HORIZON)
    spans = page.eval_on_selector_all(
        "svg.daily-chart text.tick.x",
        "els => els.map(e => { const b = e.getBBox(); return [b.x, b.x + b.width]; })",
    )
    assert len(spans) >= 2 and all(a[1] <= b[0] for a, b in pairwise(spans)), spans
    page.screenshot(path=str(shots / "forecast-explorer-day-narrow.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    with page.expect_download() as download_info:
        page.locator("#download-csv").click()
    downloaded = Path(download_info.value.path()).read_text(encoding="utf-8")
    rows = {r["date"]: r for r in csv.DictReader(io.StringIO(downloaded))}
    for day, answer in answers.items():
        assert close(float(rows[day]["predicted_quantity"]), answer["predicted_quantity"]), day
    assert close(float(rows[window[-1]]["actual_quantity"]), sold.get(window[-1], 0.0))
