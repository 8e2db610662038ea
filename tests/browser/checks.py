"""The dashboard checks the browser test runs on its trained system: the explorer follows the active
model, keyboard activation, focus kept across refreshes, the phone layout, the table's history toggle,
the bulk export, the accuracy table per series."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from salesflow.clients.jobs import JobServerClient
from salesflow.registry import ModelRegistry

#: A page update after an action (a poll is at most 1-10 s away).
UI_TIMEOUT_MS = 30_000
#: A phone's width and height, in CSS pixels.
PHONE = (390, 844)
#: The most a phone's header may take (two short rows).
PHONE_HEADER_PX = 100


def check_explorer_follows_the_active_model(
    page: Any, base: str, settings: Any, store: str, product: str
) -> None:
    """An activation elsewhere redraws the open explorer; Enter on "Activate" activates."""
    from playwright.sync_api import expect

    # A second month version (a copy of v0001 published as a candidate) to switch between.
    registry = ModelRegistry(settings.warehouse_path / "models")
    first = registry.get("v0001")
    with registry.staging() as staged:
        shutil.copytree(first.path, staged, dirs_exist_ok=True)
        copy = registry.publish(staged, first.metadata, activate=False, reason="t", actor="test")
    lineage = page.locator("#forecast-lineage")
    page.goto(f"{base}/#/forecast?store={store}&product={product}")
    # Drawn for this one series (the totals drawn before have no band), from v0001.
    band = page.locator("svg.monthly-chart path.band[data-level='0.8']")
    expect(band).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(lineage).to_contain_text("Model v0001")

    with JobServerClient(settings) as client:
        client.activate(copy.version, reason="activated by the browser test")
    expect(lineage).to_contain_text(f"Model {copy.version}", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#forecast-note")).to_contain_text(f"now {copy.version}")

    # Back to v0001 with the keyboard only: Enter on the row's button, Enter on the dialog's.
    page.goto(f"{base}/#/models")
    button = page.locator("#models-table button[data-version='v0001']")
    button.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.locator("#confirm-ok").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#models-table tr[data-version='v0001']")).to_contain_text(
        "active (month)", timeout=UI_TIMEOUT_MS
    )
    page.goto(f"{base}/#/forecast?store={store}&product={product}")
    expect(lineage).to_contain_text("Model v0001", timeout=UI_TIMEOUT_MS)


def check_focus_kept_across_refreshes(page: Any, base: str) -> None:
    """The jobs view redraws every few seconds; a focused row keeps the focus through it."""
    page.goto(f"{base}/#/jobs")
    row = page.locator("#jobs-table tbody tr").first
    row.focus()
    job = row.get_attribute("data-job")
    count = int(page.evaluate("() => Number(document.body.dataset.refreshes || 0)"))
    page.wait_for_function(f"() => Number(document.body.dataset.refreshes || 0) >= {count + 2}")
    focused = page.evaluate("() => document.activeElement.closest('tr')?.dataset.job || null")
    assert focused == job
    # The chosen job's log, scrolled a little, stays scrolled through the redraws.
    log = page.locator("#job-detail pre.log")
    assert log.evaluate("e => e.scrollHeight > e.clientHeight + 40"), "the log does not scroll"
    log.evaluate("e => { e.scrollTop = 40; }")
    count = int(page.evaluate("() => Number(document.body.dataset.refreshes || 0)"))
    page.wait_for_function(f"() => Number(document.body.dataset.refreshes || 0) >= {count + 2}")
    assert page.locator("#job-detail pre.log").evaluate("e => e.scrollTop") == 40


def check_phone_layout(page: Any, base: str, shots: Path) -> None:
    """At 390 px the header is two short rows and every model's Activate button is on screen."""
    from playwright.sync_api import expect

    width, height = PHONE
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"{base}/#/models")
    button = page.locator("#models-table button[data-version]").first
    expect(button).to_be_visible(timeout=UI_TIMEOUT_MS)
    # Measured in one step: a refresh may replace the button between two Playwright calls.
    left, right = page.evaluate(
        "() => { const r = document.querySelector('#models-table button[data-version]')"
        ".getBoundingClientRect(); return [r.left, r.right]; }"
    )
    assert 0 <= left < right <= width, (left, right)
    tall = page.evaluate(
        "() => document.querySelector('header.top').getBoundingClientRect().height"
    )
    assert tall <= PHONE_HEADER_PX, f"the header takes {tall} px"
    scrolls = page.evaluate("() => document.documentElement.scrollWidth")
    assert scrolls <= width, f"the page scrolls sideways: {scrolls} px wide"
    page.screenshot(path=str(shots / "models-phone.png"), full_page=True)


def check_table_starts_at_the_forecast(page: Any, months: int) -> None:
    """The numbers table shows the forecast's rows; the history's are behind a toggle."""
    from playwright.sync_api import expect

    table = page.locator("#forecast-numbers")
    expect(table.locator("tr[data-kind='forecast']:visible")).to_have_count(12)
    expect(table.locator("tr[data-kind='actual']:visible")).to_have_count(0)
    toggle = page.locator("#toggle-history")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(table.locator("tr[data-kind='actual']:visible")).to_have_count(months)
    toggle.click()
    expect(table.locator("tr[data-kind='actual']:visible")).to_have_count(0)


def check_a_failed_upload(page: Any, base: str, folder: Path) -> None:
    """A training that rejects too many rows: the stepper stops at it; "Train again" starts a new
    job, which shows the real counts and links its rejects file through the dashboard."""
    from playwright.sync_api import expect

    from salesflow.sales.generate import generate_sales

    bad = folder / "too-many-rejects.csv"
    generate_sales(bad, rows=900, seed=5)
    with bad.open("a") as handle:
        for i in range(100):  # 10% of the rows, above the 5% limit; the preview lets it through
            handle.write(f"p{i},n,1,s1,s,3,2021-13-{i % 28 + 1:02d}\n")
    page.goto(f"{base}/#/upload")
    page.set_input_files("#file-input", str(bad))
    status = page.locator("#upload-status")
    expect(status).to_have_attribute("data-status", "failed", timeout=UI_TIMEOUT_MS * 6)
    expect(status.locator("li.step.failed")).to_have_text("failed (training)")
    expect(status.locator("li.step.current")).to_have_count(0)
    expect(page.locator("#upload-result")).not_to_contain_text("file://")

    first_job = page.locator("#upload-result a[href^='#/jobs/']").get_attribute("href")
    # "Train again": a new job on the stored file, followed on its own page; it fails the same way.
    page.locator("#retrain").click()
    page.wait_for_url(lambda url: "#/jobs/" in url and not url.endswith(str(first_job)))
    facts = page.locator("#job-detail dl.facts")
    expect(facts.locator(".badge")).to_have_text("failed", timeout=UI_TIMEOUT_MS * 6)
    expect(facts).to_contain_text("1,000")
    expect(facts.locator("dt:text('rows rejected') + dd")).to_have_text("100")
    link = page.locator("#job-rejects")
    href = link.get_attribute("href")
    assert href and href.startswith("/api/jobs/"), href
    answer = page.request.get(f"{base}{href}")
    assert answer.status == 200, answer.text()
    lines = answer.text().splitlines()
    assert lines[0].endswith("reject_reason") and len(lines) == 101, lines[:2]


def check_export_all_series(
    page: Any, base: str, folder: Path, series: set[tuple[str, str]]
) -> None:
    """ "Export all series" saves a CSV of every series x the chosen months, with both bands."""
    import csv

    from playwright.sync_api import expect

    page.goto(f"{base}/#/forecast")
    page.locator("#export-months").fill("3")
    page.locator("#export-format").select_option("csv")
    with page.expect_download(timeout=UI_TIMEOUT_MS) as caught:
        page.locator("#export-button").click()
    saved = folder / caught.value.suggested_filename
    caught.value.save_as(saved)
    expect(page.locator("#export-status")).to_contain_text(f"{len(series) * 3:,} rows from model")
    with saved.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(series) * 3
    assert {(r["store_id"], r["product_id"]) for r in rows} == series
    assert len({r["period"] for r in rows}) == 3 and {r["model_version"] for r in rows} == {"v0001"}
    for r in rows:
        if r["basis"] == "model":
            lo95, lo80, mid, hi80, hi95 = (
                float(r[c]) for c in ("lo_95", "lo_80", "predicted_quantity", "hi_80", "hi_95")
            )
            assert lo95 <= lo80 <= mid <= hi80 <= hi95, r


def check_accuracy_per_series(page: Any, base: str) -> None:
    """The models view's accuracy table: worst WAPE first, re-sorted by a header, and a row's
    store opens that series in the explorer."""
    from playwright.sync_api import expect

    page.goto(f"{base}/#/models/v0001")
    rows = page.locator("#accuracy-detail tbody tr")
    expect(rows.first).to_be_visible(timeout=UI_TIMEOUT_MS)

    def column(key: str) -> list[float]:
        values = page.eval_on_selector_all(
            f"#accuracy-detail td[data-col='{key}'] span", "els => els.map(e => e.dataset.value)"
        )
        return [float(v) for v in values if v not in (None, "")]

    wape = column("wape")
    assert wape and wape == sorted(wape, reverse=True)
    page.locator("#accuracy-detail button[data-sort='mase']").click()
    mase = column("mase")
    assert mase == sorted(mase, reverse=True)
    page.locator("#accuracy-detail button[data-sort='mase']").click()
    assert column("mase") == sorted(mase)
    first = rows.first
    store, product = first.get_attribute("data-store"), first.get_attribute("data-product")
    first.locator("a").click()
    expect(page.locator("#store-select")).to_have_value(str(store), timeout=UI_TIMEOUT_MS)
    expect(page.locator("#product-select")).to_have_value(str(product))
