"""The review page in headless Chromium (Debian's chromium + chromedriver, driven by Selenium):
log in, open the queue, paint on a tile, save, see the diff, roll back, see the audit entries;
a labeler cannot reach admin pages. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PASSWORD, mask_from, need

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
SCALE = 12  # screen pixels per tile pixel in the editor (ui/static/editor.js)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = need("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--disable-gpu"):
        options.add_argument(argument)
    # Debian's chromedriver matches Debian's chromium: Selenium downloads nothing.
    driver = webdriver.Chrome(options=options, service=Service(need("chromedriver")))
    driver.implicitly_wait(0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait_for(driver, predicate, timeout: float = 20):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A page that a form post is replacing: the element found may be gone by the time its text
    # is read, or not there yet. Either way, look again.
    return WebDriverWait(driver, timeout, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(lambda d: predicate(d))


def log_in(driver, url: str, username: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{url}/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    wait_for(driver, lambda d: d.find_elements(By.ID, "logout"))


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def test_labeler_paints_saves_sees_the_diff_rolls_back_and_the_audit_shows_it(
        review_box, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url = review_box.url
    log_in(browser, url, "lena")
    assert not browser.find_elements(By.ID, "nav-audit")  # no link to what a labeler may not see

    browser.get(f"{url}/queue?uncertainty_threshold=0&limit=50")
    rows = browser.find_elements(By.CSS_SELECTOR, "#queue tbody tr[data-tile-id]")
    uncertainties = [float(r.find_element(By.CLASS_NAME, "uncertainty").text) for r in rows]
    assert len(rows) >= 3 and uncertainties == sorted(uncertainties, reverse=True)
    browser.save_screenshot(str(SCREENSHOTS / "queue.png"))

    # A tile nobody else's test touches: the last in the queue.
    tile_id = int(rows[-1].get_attribute("data-tile-id"))
    rows[-1].find_element(By.CLASS_NAME, "tile-link").click()
    wait_for(browser, lambda d: text_of(d, "status").startswith("Version 0"))

    # Paint on six pixels the model left as background, at brush size 1.
    model_mask = mask_from(review_box.login("lena").get(f"{url}/api/v1/tiles/{tile_id}").json())
    targets = np.argwhere(~model_mask)[::37][:6]
    canvas = browser.find_element(By.ID, "tile-canvas")
    width, height = canvas.size["width"], canvas.size["height"]
    for row, column in targets:
        ActionChains(browser).move_to_element_with_offset(
            canvas, int((column + 0.5) * SCALE - width / 2),
            int((row + 0.5) * SCALE - height / 2)).click().perform()
    browser.find_element(By.ID, "save").click()
    wait_for(browser, lambda d: text_of(d, "status").startswith("Saved as version 1"))
    assert text_of(browser, "diff") == "+6 px \u22120 px"
    browser.save_screenshot(str(SCREENSHOTS / "editor.png"))

    saved = mask_from(review_box.login("lena").get(f"{url}/api/v1/tiles/{tile_id}").json())
    assert sorted(map(tuple, np.argwhere(saved & ~model_mask))) == sorted(map(tuple, targets))
    assert not (model_mask & ~saved).any()

    to_model = "#history tr[data-version='0'] .rollback"
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, to_model))
    browser.find_element(By.CSS_SELECTOR, to_model).click()
    wait_for(browser, lambda d: text_of(d, "status") == "Version 2 restores version 0.")
    assert text_of(browser, "diff") == "+0 px \u22126 px"
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history tbody tr")) == 3)
    restored = mask_from(review_box.login("lena").get(f"{url}/api/v1/tiles/{tile_id}").json())
    assert (restored == model_mask).all()

    # A labeler cannot reach admin pages, not even by typing the address.
    for page in ("/audit", "/outbox"):
        browser.get(url + page)
        assert "Not allowed" in browser.find_element(By.TAG_NAME, "h1").text

    browser.find_element(By.ID, "logout").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "username"))
    log_in(browser, url, "admin")
    browser.get(f"{url}/audit?actor=lena&object_id={tile_id}")
    actions = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#audit td.action")]
    assert actions == ["label.rollback", "label.edit"]
    browser.save_screenshot(str(SCREENSHOTS / "audit.png"))

    browser.get(f"{url}/runs/{review_box.run_id}")
    loaded = "const img = document.getElementById(arguments[0]); " \
             "return img.complete && img.naturalWidth"
    for image in ("qc", "enface", "b-scan", "density-map", "thickness-map"):
        assert wait_for(browser, lambda d, image=image: d.execute_script(loaded, image)), image
    assert browser.find_elements(By.CSS_SELECTOR, "#measurements td")
    # The model-free density sits beside the detected one: a number, or why there is none.
    spectral = browser.find_element(By.ID, "spectral-density").text
    assert spectral.startswith("not resolved: ") or "row spacing" in spectral, spectral
    scale = browser.find_element(By.ID, "cone-scale").text
    assert scale.startswith(("the image's own scale (", "the image resampled to ")), scale
    # The frame slider shows another B-scan.
    slider = browser.find_element(By.ID, "frame")
    middle = int(slider.get_attribute("value"))
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    wait_for(browser, lambda d: text_of(d, "frame-number") == str(middle + 2))
    assert browser.find_element(By.ID, "b-scan").get_attribute("src").endswith(
        f"/b-scans/{middle + 2}.png")
    assert wait_for(browser, lambda d: d.execute_script(loaded, "b-scan"))
    browser.save_screenshot(str(SCREENSHOTS / "case.png"))
    # The CSP forbids inline script; the pages' own scripts ran without a violation or error
    # (network entries are the 403 pages above).
    errors = [entry for entry in browser.get_log("browser")
              if entry["level"] == "SEVERE" and entry["source"] != "network"]
    assert not errors, errors



def test_ml_engineer_and_admin_register_promote_by_override_and_roll_back_a_model(
        tmp_path, browser):
    """The models page end to end: register from the page, the gate's figures, a refused
    promotion naming the failing figure, an admin's override, the rollback and its alert."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.conftest import ACCOUNTS, Box, wait_for_http
    from tests.test_lifecycle import same_weights_as_bundled

    box = Box(tmp_path, models__evaluation_seeds="1")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    box.aomas("init", "--admin-user", "admin", "--admin-password-file", str(password_file))
    box.aomas("user", "add", "mia", "--role", ACCOUNTS["mia"], "--password-file",
              str(password_file))
    box.aomas("model", "register", str(same_weights_as_bundled(tmp_path, "site-a")))
    box.aomas("model", "gate", "site-a")
    box.start("web")
    url = f"http://127.0.0.1:{box.web_port}"
    try:
        wait_for_http(f"{url}/healthz")
        log_in(browser, url, "mia")
        browser.get(f"{url}/models")
        upload = same_weights_as_bundled(tmp_path, "site-b")
        browser.find_element(By.NAME, "weights").send_keys(str(upload / "weights.safetensors"))
        browser.find_element(By.NAME, "card").send_keys(str(upload / "model_card.json"))
        browser.find_element(By.CSS_SELECTOR, "#register button").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "stage"))
        assert text_of(browser, "stage") == "STAGING" and "site-b registered" in \
            browser.page_source

        browser.get(f"{url}/models/site-a")
        assert "failed: F1 0.73 below 0.90" in text_of(browser, "gates")
        assert not browser.find_elements(By.NAME, "override_reason")  # an admin's alone
        Select(browser.find_element(By.ID, "promote-stage")).select_by_visible_text("SHADOW")
        browser.find_element(By.ID, "promote").click()
        wait_for(browser, lambda d: "F1 0.73 below 0.90" in d.page_source)
        assert "An admin may override" in browser.page_source
        browser.save_screenshot(str(SCREENSHOTS / "model-gate-refused.png"))

        log_in(browser, url, "admin")
        browser.get(f"{url}/models/site-a")
        Select(browser.find_element(By.ID, "promote-stage")).select_by_visible_text("SHADOW")
        browser.find_element(By.NAME, "override_reason").send_keys(
            "compare on this site's scans before the retrain")
        browser.find_element(By.ID, "promote").click()
        wait_for(browser, lambda d: text_of(d, "stage") == "SHADOW")
        assert text_of(browser, "override-badge") == "promoted by override"
        assert "compare on this site's scans" in text_of(browser, "history")
        browser.save_screenshot(str(SCREENSHOTS / "model-override.png"))

        browser.find_element(By.NAME, "reason").send_keys("enough comparisons")
        browser.find_element(By.ID, "rollback").click()
        wait_for(browser, lambda d: text_of(d, "stage") == "ROLLED_BACK")
        assert "site-a rolled back from SHADOW" in text_of(browser, "alert-banner")
        browser.save_screenshot(str(SCREENSHOTS / "model-rolled-back.png"))
        browser.find_element(By.ID, "rollback").click()  # again: nothing changes, and it says so
        wait_for(browser, lambda d: "already rolled back" in d.page_source)
        browser.find_element(By.CSS_SELECTOR, "#alert-banner button").click()
        wait_for(browser, lambda d: not d.find_elements(By.ID, "alert-banner"))
    finally:
        box.stop_all()
