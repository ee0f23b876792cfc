"""A real browser: headless Chromium (Debian's package) on the dashboard the CLI serves.

The run page must render its timeline (bars sized and placed by the stylesheet and the SVG,
no script) and link to its event. Set ``CELERY_STEPS_SCREENSHOT=docs/img/run-page.png`` to
refresh the screenshot in the docs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from celery_steps import CelerySteps
from tests.dashboard.conftest import serve_dashboard, start

pytestmark = pytest.mark.redis
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    assert not missing, "apt-get install -y chromium chromium-driver (see .ci/run)"
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let selenium fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1360,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_run_page_renders_its_timeline_in_chromium_and_links_its_event(
    browser: webdriver.Chrome, redis_steps: CelerySteps, redis_url: str, namespace: str,
    tmp_path: Path
) -> None:
    # given a completed checkout on Redis: a retried step, a failed one, a sleep, an invoke
    run_id = start(redis_steps, "shop/order.paid", {"order": 42, "customer": "ada"},
                   event_id="evt-order-42")
    run = redis_steps.get_run(run_id)

    with serve_dashboard(redis_url, namespace, tmp_path) as served:
        # when the run page is opened
        browser.get(f"{served.url}/runs/{run_id}")

        # then each step is a row with its id, status and a drawn bar, left to right in time
        rows = browser.find_elements(By.CSS_SELECTOR, "tr.step")
        assert [r.find_element(By.CSS_SELECTOR, ".step-id").text for r in rows] == [
            s.id for s in run.steps]
        assert [r.find_element(By.CSS_SELECTOR, ".status").text for r in rows] == [
            s.status for s in run.steps]
        bars = browser.find_elements(By.CSS_SELECTOR, "rect.bar")
        assert len(bars) == len(run.steps)
        lefts = [b.location["x"] for b in bars]
        assert lefts == sorted(lefts) and lefts[-1] > lefts[0]
        assert all(b.size["width"] >= 1 for b in bars)
        sleep_bar = bars[4]  # the 2 s sleep is most of the run's 3.4 s
        assert sleep_bar.size["width"] > 0.4 * browser.find_element(
            By.CSS_SELECTOR, "svg.lane").size["width"]
        # styled by the stylesheet (served, and allowed by the CSP)
        assert bars[2].value_of_css_property("fill") == "rgb(198, 40, 40)"  # the failed step
        assert "warehouse" in browser.find_element(By.CSS_SELECTOR, ".error").text
        assert not [e for e in browser.get_log("browser") if "Content Security" in e["message"]]

        shot = tmp_path / "run-page.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes().startswith(PNG)
        target = os.environ.get("CELERY_STEPS_SCREENSHOT")
        if target:
            shutil.copyfile(shot, target)

        # and the event link leads to the event, which links back to the run
        browser.find_element(By.CSS_SELECTOR, 'a[href^="/events/"]').click()
        assert browser.find_element(By.TAG_NAME, "h1").text == "Event shop/order.paid"
        assert '"customer": "ada"' in browser.find_element(By.CSS_SELECTOR, "pre.payload").text
        browser.find_element(By.CSS_SELECTOR, f'a[href="/runs/{run_id}"]').click()
        assert run_id in browser.find_element(By.TAG_NAME, "h1").text

        # and the invoked run links back to its parent
        browser.find_element(By.CSS_SELECTOR, ".child a").click()
        parent = browser.find_element(By.CSS_SELECTOR, "dd.parent a")
        assert parent.text == run_id
