"""The web page: served from the package, and driven in a real Chromium against a real server."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page, async_playwright, expect

from service.api.pages import STATIC_DIR
from service.config import Config
from service.db import sqlite_runs as db
from tests.conftest import claim_run, csv_records, insert_run, wait_until_up

Client = TestClient[Any, Any]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 780}
LONG = 20_000  # ms: a run's whole life, on a busy machine
expect.set_options(timeout=10_000)


# The page as the server sends it.


async def test_index_is_html_that_browsers_revalidate(client: Client) -> None:
    resp = await client.get("/")

    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert '<script type="module" src="/static/app.js">' in await resp.text()


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("chart.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
async def test_static_files_have_their_content_type(
    client: Client, name: str, content_type: str
) -> None:
    resp = await client.get(f"/static/{name}")

    assert resp.status == 200
    assert resp.headers["Content-Type"] == content_type
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert await resp.read() == (STATIC_DIR / name).read_bytes()


async def test_a_file_seen_unchanged_is_a_304(client: Client) -> None:
    first = await client.get("/static/app.js")
    again = await client.get("/static/app.js", headers={"If-None-Match": first.headers["ETag"]})

    assert again.status == 304


@pytest.mark.parametrize(
    "path", ["/static/missing.js", "/static/.hidden", "/static/%2e%2e/__init__.py", "/static/"]
)
async def test_only_the_page_files_are_served(client: Client, path: str) -> None:
    resp = await client.get(path)

    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_modules_import_only_each_other() -> None:
    """No CDN, no bundle: every import is a file of the static folder."""
    for module in STATIC_DIR.glob("*.js"):
        for target in re.findall(r'^import .* from "([^"]+)";', module.read_text(), re.M):
            assert target.startswith("./"), (module.name, target)
            assert (STATIC_DIR / target).is_file(), (module.name, target)
    html = (STATIC_DIR / "index.html").read_text()
    assert "http://" not in html
    assert "https://" not in html


# The page in a browser.


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: the browser tests need Debian's package,"
            " `apt-get install -y chromium` (`make test` installs it when missing).",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(10_000)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    await context.close()
    assert errors == [], "the page raised JavaScript errors"


async def serve(start_server: Any, **env: str) -> str:
    """A real `python -m service`; runs take a second, long enough to be seen going."""
    _, base = start_server({"KERNEL_DELAY": "1", **env})
    await wait_until_up(base)
    return str(base)


async def fill_form(page: Page, **values: str) -> None:
    labels = {
        "date_start": "Start date",
        "date_fin": "End date",
        "lag": "Step in days",
        "name": "Name",
        "seed": "Seed",
    }
    for field, value in values.items():
        await page.get_by_label(labels[field]).fill(value)


async def test_a_run_launched_from_the_form_is_watched_charted_and_downloaded(
    start_server: Any, page: Page, tmp_path: Path
) -> None:
    base = await serve(start_server)
    await page.goto(f"{base}/")
    await fill_form(
        page,
        date_start="2024-01-01",
        date_fin="2024-03-01",
        lag="7",
        name="from the form",
        seed="42",
    )
    await page.get_by_role("button", name="Launch run").click()

    row = page.locator("#runs-body tr", has_text="from the form")
    await expect(row.locator(".badge")).to_have_text(re.compile(r"^(queued|running)$"))
    await expect(page.locator("#runs-table")).to_have_attribute("data-polling", "true")
    await row.evaluate("row => { row.dataset.probe = 'kept'; }")
    await expect(row.locator(".badge")).to_have_text("done", timeout=LONG)
    # The row was updated in place, not rebuilt, and polling stopped with nothing left to watch.
    await expect(row).to_have_attribute("data-probe", "kept")
    await expect(page.locator("#runs-table")).to_have_attribute("data-polling", "false")

    calc_id = await row.get_attribute("data-id")
    await row.get_by_role("link", name="from the form").click()
    await expect(page).to_have_url(f"{base}/#/calculations/{calc_id}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("from the form")
    await expect(page.locator("#run-badge")).to_have_text("done")
    await expect(page.locator("#fact-seed")).to_have_text("42")

    # 2024-01-01 to 2024-03-01 every 7 days: 9 rows, each drawn, nothing thinned.
    chart = page.locator("#chart")
    await expect(chart).to_have_attribute("data-rows", "9")
    await expect(chart).to_have_attribute("data-points", "9")
    lines = chart.locator("path[data-series]")
    await expect(lines).to_have_count(4)
    for d in await lines.evaluate_all("paths => paths.map(p => p.getAttribute('d'))"):
        assert len(re.findall("[ML]", d)) == 9
    await expect(chart.locator("figcaption")).to_have_text("All 9 rows are plotted.")
    await expect(page.locator("#rows-body tr")).to_have_count(9)
    await expect(page.locator("#rows-note")).to_have_text("All 9 rows.")

    # The chart reads out exact rows under the pointer and from the keyboard.
    plot = page.get_by_label("Production chart")
    await plot.hover(position={"x": 2, "y": 100})
    await expect(page.locator(".chart-tip")).to_contain_text("2024-01-01 · row 1 of 9")
    await plot.focus()
    await page.keyboard.press("End")
    await expect(page.locator(".chart-tip")).to_contain_text("2024-02-26 · row 9 of 9")

    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download CSV").click()
    download = await info.value
    assert download.suggested_filename == f"calculation-{calc_id}.csv"
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    answer = await page.request.get(f"{base}/api/v1/calculations/{calc_id}")
    text = await asyncio.to_thread(saved.read_text)
    assert csv_records(text) == (await answer.json())["result"]

    await page.screenshot(path=tmp_path / "run-desktop.png", full_page=True)
    await page.set_viewport_size(PHONE)
    await expect(chart.locator("svg.chart-svg")).to_have_attribute("width", re.compile(r"^3\d\d$"))
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await page.screenshot(path=tmp_path / "run-phone.png", full_page=True)


async def reasons(page: Page, base: str, body: dict[str, Any]) -> dict[str, str]:
    """What the API itself says about a body, per field, as the page should show it."""
    answer = await page.request.post(f"{base}/api/v1/calculations", data=body)
    assert answer.status == 422
    fields = (await answer.json())["error"]["fields"]
    return {name: " ".join(texts) for name, texts in fields.items()}


async def test_the_servers_reasons_show_beside_the_fields(start_server: Any, page: Page) -> None:
    base = await serve(start_server)
    await page.goto(f"{base}/")
    lag = page.get_by_label("Step in days")

    await fill_form(page, date_start="2024-01-01", date_fin="2024-01-31", lag="0")
    await page.get_by_role("button", name="Launch run").click()
    expected = await reasons(
        page, base, {"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 0}
    )
    assert list(expected) == ["lag"]
    await expect(page.locator("#lag-error")).to_have_text(expected["lag"])
    await expect(lag).to_have_attribute("aria-invalid", "true")
    await expect(lag).to_be_focused()
    await expect(page.locator("#form-error")).to_have_text(
        "The run was not launched: one field needs attention."
    )

    await fill_form(page, date_fin="2023-12-31", lag="7")
    await page.get_by_role("button", name="Launch run").click()
    date_fin = page.get_by_label("End date")
    expected = await reasons(
        page, base, {"date_start": "2024-01-01", "date_fin": "2023-12-31", "lag": 7}
    )
    assert list(expected) == ["date_fin"]
    await expect(page.locator("#date_fin-error")).to_have_text(expected["date_fin"])
    await expect(date_fin).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#lag-error")).to_be_empty()
    await expect(lag).not_to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#runs-empty")).to_have_text("No runs yet: launch one with the form.")

    await fill_form(page, date_fin="2024-01-31")
    await page.get_by_role("button", name="Launch run").click()
    await expect(page.locator("#form-status")).to_contain_text("Run #1 is queued.")
    await expect(page.locator("#form-error")).to_be_hidden()
    await expect(page.locator("#date_fin-error")).to_be_empty()


async def test_the_list_pages_sorts_and_filters(start_server: Any, page: Page) -> None:
    base = await serve(start_server, KERNEL_DELAY="0")
    for n in range(1, 13):
        answer = await page.request.post(
            f"{base}/api/v1/calculations",
            data={"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7, "name": f"r{n}"},
        )
        assert answer.status == 201
    await page.goto(f"{base}/")
    rows = page.locator("#runs-body tr")
    info = page.locator("#page-info")

    await expect(rows).to_have_count(10)
    await expect(rows.first.get_by_role("link")).to_have_text("r12")
    await expect(info).to_have_text("Page 1 of 2 · 12 runs")
    await expect(page.locator("#runs-body .badge-done")).to_have_count(10, timeout=LONG)
    await expect(page.get_by_role("button", name="Previous")).to_be_disabled()

    await page.get_by_role("button", name="Next").click()
    await expect(page).to_have_url(f"{base}/#/?page=2")
    await expect(rows).to_have_count(2)
    await expect(info).to_have_text("Page 2 of 2 · 12 runs")
    await expect(page.get_by_role("button", name="Next")).to_be_disabled()

    await page.get_by_label("Launch date").select_option("asc")
    await expect(page).to_have_url(f"{base}/#/?order=asc")
    await expect(rows.first.get_by_role("link")).to_have_text("r1")
    await expect(page.locator("#runs-launched")).to_have_attribute("aria-sort", "ascending")

    status = page.get_by_label("Status")
    await expect(status.locator("option")).to_have_text(
        ["All", "queued", "running", "done", "failed", "cancelled"]
    )
    await status.select_option("failed")
    await expect(page.locator("#runs-empty")).to_have_text("No failed runs.")
    await expect(page.locator("#runs-table")).to_be_hidden()
    await status.select_option("done")
    await expect(rows).to_have_count(10)
    await expect(info).to_have_text("Page 1 of 2 · 12 runs")

    # The address keeps the list's state: going back restores the previous view.
    await page.go_back()
    await expect(page.locator("#runs-empty")).to_have_text("No failed runs.")
    await expect(status).to_have_value("failed")


async def test_a_failed_run_shows_its_error(start_server: Any, page: Page, tmp_path: Path) -> None:
    config = Config(database_url=f"sqlite:///{tmp_path / 'calc.db'}")
    async with db.connect(config.db_path, config.schema_path) as conn:
        params = {"date_start": date(2024, 1, 1), "date_fin": date(2024, 1, 31), "lag": 7}
        await insert_run(conn, name="doomed", seed=1, **params)
        claimed = await claim_run(conn)
        assert claimed is not None
        assert await db.mark_failed(conn, claimed, "ValueError: the well ran dry", 0.25)
    base = await serve(start_server)

    await page.goto(f"{base}/#/calculations/{claimed.id}")

    await expect(page.get_by_role("heading", level=1)).to_have_text("doomed")
    await expect(page.locator("#run-badge")).to_have_text("failed")
    await expect(page.locator("#run-failure")).to_have_text(
        "This run failed: ValueError: the well ran dry"
    )
    await expect(page.locator("#result")).to_be_hidden()
    await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()

    await page.goto(f"{base}/#/calculations/999")
    await expect(page.locator("#run-load-error")).to_have_text("Run #999 does not exist.")


async def test_cancel_button_cancels_or_says_why_not(start_server: Any, page: Page) -> None:
    # A long kernel keeps the run going; no grace at shutdown ends it at teardown.
    base = await serve(start_server, KERNEL_DELAY="60", SHUTDOWN_GRACE="0")
    answer = await page.request.post(
        f"{base}/api/v1/calculations",
        data={"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7},
    )
    calc_id = (await answer.json())["id"]
    await page.goto(f"{base}/#/calculations/{calc_id}")
    badge = page.locator("#run-badge")
    await expect(badge).to_have_text(re.compile(r"^(queued|running)$"))
    await expect(page.locator("#run-view")).to_have_attribute("data-polling", "true")

    await page.get_by_role("button", name="Cancel run").click()

    # Either the API cancelled the run, or the page shows the API's reason for not doing so.
    refusal = page.locator("#run-cancel-error")
    outcome = page.locator("#run-badge.badge-cancelled, #run-cancel-error:not([hidden])")
    await expect(outcome).to_have_count(1)
    if await refusal.is_visible():
        again = await page.request.post(f"{base}/api/v1/calculations/{calc_id}/cancel")
        message = (await again.json())["error"]["message"]
        await expect(refusal).to_have_text(f"Could not cancel: {message}")
    else:
        await expect(badge).to_have_class("badge badge-cancelled")
        await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
        await expect(page.locator("#run-progress")).to_have_text(
            "This run was cancelled: it has no result."
        )
        await expect(page.locator("#run-view")).to_have_attribute("data-polling", "false")


async def test_delete_button_asks_first_then_deletes_the_run(start_server: Any, page: Page) -> None:
    base = await serve(start_server, KERNEL_DELAY="0")
    ids = []
    for name in ("kept", "doomed"):
        answer = await page.request.post(
            f"{base}/api/v1/calculations",
            data={"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7, "name": name},
        )
        ids.append((await answer.json())["id"])
    kept, doomed = ids
    await page.goto(f"{base}/#/calculations/{doomed}")
    await expect(page.locator("#run-badge")).to_have_text("done", timeout=LONG)
    questions: list[str] = []

    async def answer_dialog(dialog: Any, accept: bool) -> None:
        questions.append(dialog.message)
        await (dialog.accept() if accept else dialog.dismiss())

    page.once("dialog", lambda dialog: answer_dialog(dialog, accept=False))
    await page.get_by_role("button", name="Delete run").click()
    async with asyncio.timeout(10):
        while not questions:
            await asyncio.sleep(0.02)
    assert questions == [
        f"Delete run #{doomed}? Its result and CSV are deleted with it; this cannot be undone."
    ]
    still = await page.request.get(f"{base}/api/v1/calculations/{doomed}")
    assert still.status == 200  # dismissed: nothing deleted
    await expect(page.locator("#run-title")).to_have_text("doomed")

    page.once("dialog", lambda dialog: answer_dialog(dialog, accept=True))
    await page.get_by_role("button", name="Delete run").click()

    # Back on the list, which no longer holds it; the API agrees.
    await expect(page).to_have_url(f"{base}/#/")
    await expect(page.locator("#runs-body tr")).to_have_count(1)
    await expect(page.locator("#runs-body")).to_contain_text("kept")
    await expect(page.locator("#runs-body")).not_to_contain_text("doomed")
    gone = await page.request.get(f"{base}/api/v1/calculations/{doomed}")
    assert gone.status == 404
    assert (await page.request.get(f"{base}/api/v1/calculations/{kept}")).status == 200
    assert len(questions) == 2


async def test_with_an_api_token_the_page_asks_for_it_once(start_server: Any, page: Page) -> None:
    base = await serve(start_server, API_TOKEN="s3cret", KERNEL_DELAY="0")
    auth = {"Authorization": "Bearer s3cret"}
    answer = await page.request.post(
        f"{base}/api/v1/calculations",
        data={"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7, "name": "guarded"},
        headers=auth,
    )
    calc_id = (await answer.json())["id"]
    await page.goto(f"{base}/")
    token = page.get_by_label("API token", exact=True)

    await expect(token).to_be_focused()
    await token.fill("wrong")
    await page.get_by_role("button", name="Use this token").click()
    await expect(page.locator("#token-note")).to_have_text(
        "The server refused that token. Try again."
    )
    await token.fill("s3cret")
    await page.get_by_role("button", name="Use this token").click()
    await expect(page.locator("#token-form")).to_be_hidden()

    row = page.locator("#runs-body tr", has_text="guarded")
    await expect(row.locator(".badge")).to_have_text("done", timeout=LONG)
    await row.get_by_role("link").click()
    await expect(page.locator("#chart")).to_have_attribute("data-rows", "5")
    # A link cannot carry the token, so the page fetches the file and hands it over.
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download CSV").click()
    download = await info.value
    assert download.suggested_filename == f"calculation-{calc_id}.csv"
    text = await asyncio.to_thread(Path(str(await download.path())).read_text)
    answer = await page.request.get(f"{base}/api/v1/calculations/{calc_id}", headers=auth)
    assert csv_records(text) == (await answer.json())["result"]


THINNING = """async () => {
    const { MAX_DRAWN, countPoints, pickIndices } = await import("/static/series.js");
    const rows = Array.from({ length: 100000 }, (_, i) => ({
        liquid: Math.sin(i / 50) + (i === 54321 ? 99 : 0) - (i === 777 ? 99 : 0),
        wct: i % 7 === 0 ? null : 0.5,
    }));
    const liquid = pickIndices(rows, "liquid", MAX_DRAWN);
    return {
        maxDrawn: MAX_DRAWN,
        points: countPoints(liquid),
        inOrder: liquid.every((v, i) => i === 0 || v > liquid[i - 1]),
        keepsPeakAndTrough: liquid.includes(54321) && liquid.includes(777),
        wctPoints: countPoints(pickIndices(rows, "wct", MAX_DRAWN)),
        few: pickIndices(rows.slice(0, 8), "wct", MAX_DRAWN),
    };
}"""

TICKS = """async () => {
    const { dateTicks } = await import("/static/ticks.js");
    const { dayNumber, dayString } = await import("/static/format.js");
    const labels = (a, b, n) => dateTicks(dayNumber(a), dayNumber(b), n).map((t) => t.label);
    return {
        months: labels("2024-01-01", "2024-12-31", 6),
        weeks: labels("2024-01-01", "2024-01-31", 5),
        centuries: labels("0001-01-01", "9999-12-31", 6),
        firstDay: dayString(dayNumber("0001-01-01")),
    };
}"""


async def test_large_results_are_thinned_without_losing_peaks(client: Client, page: Page) -> None:
    await page.goto(str(client.make_url("/")))

    thinned = await page.evaluate(THINNING)

    assert thinned["maxDrawn"] == 1000
    assert 900 <= thinned["points"] <= 1000
    assert thinned["inOrder"]
    assert thinned["keepsPeakAndTrough"]
    assert thinned["wctPoints"] <= 1000
    assert thinned["few"] == [-1, 1, 2, 3, 4, 5, 6, -1]


async def test_date_ticks_fall_on_calendar_boundaries(client: Client, page: Page) -> None:
    await page.goto(str(client.make_url("/")))

    ticks = await page.evaluate(TICKS)

    assert ticks["months"] == ["2024-01", "2024-03", "2024-05", "2024-07", "2024-09", "2024-11"]
    assert ticks["weeks"] == ["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22", "2024-01-29"]
    assert ticks["centuries"] == ["2000", "4000", "6000", "8000"]
    assert ticks["firstDay"] == "0001-01-01"


async def test_swagger_ui_renders_under_its_csp_and_can_create_a_run(
    start_server: Any, page: Page
) -> None:
    """The docs page runs Swagger UI's bundled assets with no inline script, breaks no rule
    of its CSP, and its "Try it out" (a same-origin POST) is not taken for a cross-site one."""
    base = await serve(start_server)
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    await page.goto(f"{base}/api/docs")
    operation = page.locator("#operations-calculations-post_api_v1_calculations")
    await operation.locator(".opblock-summary").click()
    await operation.get_by_role("button", name="Try it out").click()
    await operation.locator("textarea.body-param__text").fill(
        '{"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7}'
    )
    await operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status")
    await expect(status).to_have_text("201")
    assert violations == []
