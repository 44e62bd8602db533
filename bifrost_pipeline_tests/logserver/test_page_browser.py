"""The log explorer in a real browser: Debian's chromium driven by chromedriver through selenium
(installed by scripts/emulators/chromium.sh). Loads the page, signs in, filters, opens a record, watches a
live record arrive, and keeps a screenshot in the test's tmp dir."""

from __future__ import annotations

import os
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from bifrost_pipeline.logserver.app import create_app
from bifrost_pipeline_tests.logserver.conftest import KEY, serve
from bifrost_pipeline_tests.logserver.test_live import _land_open, _now_record

CHROMIUM = os.environ.get("BIFROST_CHROMIUM") or shutil.which("chromium")
CHROMEDRIVER = os.environ.get("BIFROST_CHROMEDRIVER") or shutil.which("chromedriver")
# `make test` installs both (scripts/emulators/chromium.sh); without them the page is untested, which is a
# failure, not a skip.
if not (CHROMIUM and CHROMEDRIVER):
    raise RuntimeError("chromium and chromedriver are not installed: run scripts/emulators/chromium.sh")


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_sign_in_filter_open_a_record_and_see_a_live_one(landed, browser, tmp_path):
    app, expected = landed
    wait = WebDriverWait(browser, 15)
    rows = (By.CSS_SELECTOR, "#logs tbody tr")
    with serve(create_app(app)) as base:
        browser.get(base + "/")
        wait.until(ec.visibility_of_element_located((By.ID, "login-key"))).send_keys(KEY)
        browser.find_element(By.ID, "login-submit").click()
        wait.until(lambda d: len(d.find_elements(*rows)) == 50)
        assert browser.find_element(By.ID, "page-info").text == f"1–50 of {len(expected):,}"
        assert browser.find_elements(By.CSS_SELECTOR, "#charts svg polyline")  # the charts are drawn

        browser.find_element(By.ID, "filter-providers").send_keys("anthropic")
        Select(browser.find_element(By.ID, "filter-status")).select_by_visible_text("error")
        browser.find_element(By.ID, "apply").click()
        want = [r for r in expected if r["provider"] == "anthropic" and r["status"] == "error"]
        wait.until(lambda d: d.find_element(By.ID, "page-info").text == f"1–{len(want)} of {len(want)}")
        cells = [tr.find_elements(By.TAG_NAME, "td")[2].text for tr in browser.find_elements(*rows)]
        assert cells == ["anthropic"] * len(want)

        first = browser.find_elements(*rows)[0]
        request_id = first.get_attribute("data-request-id")
        first.click()
        wait.until(ec.visibility_of_element_located((By.ID, "detail")))
        assert browser.find_element(By.ID, "detail-title").text == request_id
        detail = browser.find_element(By.ID, "detail-body").text
        assert "SYSTEM" in detail and "You are a helpful assistant." in detail  # the conversation
        assert "x-tenant-id" in detail and "customer_id" in detail  # metadata and the other fields
        browser.save_screenshot(str(tmp_path / "detail.png"))
        browser.find_element(By.ID, "detail-close").click()

        browser.find_element(By.ID, "clear-filters").click()
        wait.until(lambda d: d.find_element(By.ID, "page-info").text == f"1–50 of {len(expected):,}")
        browser.find_element(By.ID, "live-toggle").click()
        wait.until(lambda d: "streaming" in d.find_element(By.ID, "live-state").text)
        _land_open(app, _now_record("r_browser_live", model="gpt-live-test")).close()
        live = (By.CSS_SELECTOR, "#logs tbody tr[data-request-id=r_browser_live]")
        WebDriverWait(browser, 5).until(ec.presence_of_element_located(live))
        assert "gpt-live-test" in browser.find_element(*live).text
        browser.save_screenshot(str(tmp_path / "live.png"))
    print(f"screenshots: {tmp_path}")
