"""The web page at `/` in a real browser: Debian's chromium, headless, driven through
Debian's chromium-driver (installed by scripts/browser-setup.sh, which `make test` runs).

A real daemon serves the page and runs the jobs; the page is used like a person would:
submit from the forms, watch rows change without a reload, open the preview and play it.
Screenshots land in test-artifacts/ (web-page.png, web-page-phone.png, …).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.support import REPO, Daemon, wait_status

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = REPO / "test-artifacts"
TINY = {"seconds_per_slide": 1, "width": 320, "height": 240, "fps": 10}

# Every change of a job row (state and progress), recorded in the page as it happens, and a
# marker that a reload would wipe out.
WATCH_ROWS = """
window.__testMarker = arguments[0];
window.__seen = {};
const record = () => {
  for (const tr of document.querySelectorAll('#jobs-body tr[data-job-id]')) {
    const bar = tr.querySelector('.progress');
    const key = tr.dataset.state + ':' + (bar ? bar.dataset.progress : '');
    const list = (window.__seen[tr.dataset.jobId] = window.__seen[tr.dataset.jobId] || []);
    if (list[list.length - 1] !== key) list.push(key);
  }
};
record();
new MutationObserver(record).observe(document.querySelector('#jobs-body'),
  {subtree: true, childList: true, attributes: true, characterData: true});
"""


def make_browser(mobile: bool = False, extra_args: tuple[str, ...] = ()) -> webdriver.Chrome:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:  # a failure, not a skip: `make test` installs them
        pytest.fail(f"{' and '.join(missing)} missing: run `bash scripts/browser-setup.sh` as root (or `make test`)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--mute-audio", "--no-first-run", "--disable-extensions", *extra_args):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if mobile:
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0, "touch": True}})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def web_daemon(tmp_path_factory):
    """One daemon with one CPU worker for the page tests (slideshows are quick)."""
    d = Daemon(tmp_path_factory.mktemp("web") / "spool", workers=["cpu"]).start()
    yield d
    d.stop()


@pytest.fixture
def browser():
    driver = make_browser()
    yield driver
    driver.quit()


def page_state(driver) -> str:
    try:
        state = driver.execute_script("""return {
          live: document.querySelector('#live').dataset.mode,
          status: document.querySelector('#submit-status').textContent,
          error: document.querySelector('#error-banner').hidden ? '' : document.querySelector('#error-text').textContent,
          rows: [...document.querySelectorAll('#jobs-body tr')].map(tr => tr.dataset.jobId + ' ' + tr.dataset.state
                 + ' ' + tr.querySelector('.stage').textContent),
          seen: window.__seen || null};""")
        logs = [f"{e['level']} {e['message']}" for e in driver.get_log("browser")]
    except Exception as exc:  # the browser itself is gone
        return f"(no page state: {exc})"
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "web-page-failure.png"))
    return json.dumps(state, indent=1) + "\nconsole:\n" + "\n".join(logs[-30:])


def wait_js(driver, script: str, what: str, timeout: float = 30, *args):
    """Polls a JS expression (`return …`) until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last {value!r})\n{page_state(driver)}")


def open_page(driver, api: str, expect_live: str | None = "sse") -> None:
    driver.get(api + "/")
    wait_js(driver, "return document.querySelectorAll('#kind option').length > 0", "GET /api/v1/info on the page")
    wait_js(driver, "return document.querySelectorAll('#devices [data-device]').length > 0", "the devices panel")
    if expect_live:
        wait_js(driver, "return document.querySelector('#live').dataset.mode === arguments[0]",
                f"job updates by {expect_live}", 15, expect_live)


def row_state(driver, job_id: str) -> str | None:
    return driver.execute_script(
        "const tr = document.querySelector(`#jobs-body tr[data-job-id=\"${arguments[0]}\"]`); return tr && tr.dataset.state;",
        job_id)


def wait_row(driver, job_id: str, state: str, timeout: float = 90) -> None:
    wait_js(driver, "const tr = document.querySelector(`#jobs-body tr[data-job-id=\"${arguments[0]}\"]`);"
                    "return tr && tr.dataset.state === arguments[1];", f"row {job_id} {state}", timeout, job_id, state)


def submit_json(driver, doc: dict) -> str:
    driver.find_element(By.ID, "tab-json").click()
    area = driver.find_element(By.ID, "job-json")
    area.clear()
    area.send_keys(json.dumps(doc))
    driver.find_element(By.ID, "submit-json").click()
    return submitted_id(driver)


def submitted_id(driver) -> str:
    text = wait_js(driver, "const t = document.querySelector('#submit-status').textContent;"
                           "return /^(Submitted|Refused|Not valid)/.test(t) && t;", "the submission's answer")
    m = re.match(r"Submitted (\S+)\.$", text)
    assert m, f"submission refused: {text}\n{page_state(driver)}"
    return m.group(1)


def thumbnail_loaded(driver, job_id: str) -> int:
    return wait_js(driver, "const img = document.querySelector(`tr[data-job-id=\"${arguments[0]}\"] img.thumb`);"
                           "return img && img.complete && img.naturalWidth;", f"thumbnail of {job_id}", 20, job_id)


def check_video_plays(driver, seconds: float) -> dict:
    video = wait_js(driver, """const v = document.querySelector('#details video');
        return v && v.readyState >= 2 && {readyState: v.readyState, duration: v.duration, width: v.videoWidth,
                                            error: v.error && v.error.code, src: v.currentSrc};""",
                    "the preview video to have data (readyState >= 2)", 30)
    assert video["error"] is None and abs(video["duration"] - seconds) < 0.25, video
    assert video["width"] == 320, video
    return video


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def api_get(api: str, path: str, token: str | None = None) -> dict:
    req = urllib.request.Request(api + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_submit_json_watch_it_live_and_play_the_preview(web_daemon, browser):
    driver = browser
    open_page(driver, web_daemon.api)
    loaded_at = driver.execute_script("return window.vidspool.loadedAt")
    driver.execute_script(WATCH_ROWS, "no-reload")
    assert driver.execute_script("return document.querySelector('#devices [data-device]').dataset.device") == "cpu:0"

    job_id = submit_json(driver, {"id": "web-json", "kind": "slideshow", "labels": {"from": "web"},
                                  "params": {"slides": ["Hello", "World"], **TINY}})
    assert job_id == "web-json"
    wait_row(driver, job_id, "completed")

    # The row went through its states in place: no reload (the marker and the page's own
    # load time are still there), the first thing seen was not the end.
    assert driver.execute_script("return window.__testMarker") == "no-reload"
    assert driver.execute_script("return window.vidspool.loadedAt") == loaded_at
    seen = driver.execute_script("return window.__seen[arguments[0]]", job_id)
    assert seen[0].split(":")[0] in ("submitted", "queued", "running") and seen[-1] == "completed:100", seen
    assert driver.execute_script("return document.querySelector('#live').dataset.mode") == "sse"

    assert thumbnail_loaded(driver, job_id) == 320
    ARTIFACTS.mkdir(exist_ok=True)
    time.sleep(0.5)  # the progress bar's last transition
    driver.save_screenshot(str(ARTIFACTS / "web-page.png"))

    driver.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"] .details-button').click()
    wait_js(driver, "return document.querySelector('#details').open", "the details dialog")
    check_video_plays(driver, 2.0)
    files = driver.execute_script(
        "return [...document.querySelectorAll('#details-files a')].map(a => [a.textContent, a.getAttribute('href')])")
    assert sorted(files) == [["thumb.jpg", f"/api/v1/jobs/{job_id}/files/thumb.jpg"],
                             ["video.mp4", f"/api/v1/jobs/{job_id}/files/video.mp4"]]
    driver.save_screenshot(str(ARTIFACTS / "web-page-details.png"))
    driver.find_element(By.ID, "details-close").click()
    assert not driver.execute_script("return document.querySelector('#details').open")
    assert driver.execute_script("return window.__testMarker") == "no-reload"
    assert console_errors(driver) == []


def test_fields_form_uploads_a_png_as_multipart(web_daemon, browser, tmp_path):
    driver = browser
    png = tmp_path / "photo.png"
    Image.new("RGB", (400, 300), (200, 40, 40)).save(png)
    open_page(driver, web_daemon.api)
    driver.execute_script(WATCH_ROWS, "no-reload")
    assert driver.find_element(By.ID, "kind").get_attribute("value") == "slideshow"
    driver.find_element(By.ID, "slides").send_keys("Title card")
    driver.find_element(By.ID, "params-json").send_keys(json.dumps(TINY))
    driver.find_element(By.ID, "files").send_keys(str(png))
    name_field = driver.find_element(By.CSS_SELECTOR, '#file-inputs .file-input-name[data-file="photo.png"]')
    assert name_field.get_attribute("value") == "images"  # the slideshow's first input
    driver.find_element(By.ID, "submit-fields").click()
    job_id = submitted_id(driver)
    wait_row(driver, job_id, "completed")
    assert driver.execute_script("return window.__testMarker") == "no-reload"

    doc = wait_status(web_daemon.root, job_id, timeout=10)
    assert doc["job"]["inputs"] == {"images": "photo.png"}, doc["job"]
    assert doc["job"]["params"]["slides"] == ["Title card"]
    assert (web_daemon.root / "outbox" / job_id / "input" / "photo.png").read_bytes() == png.read_bytes()
    assert abs(doc["result"]["video"]["duration"] - 2.0) < 0.15  # the photo and the card, 1 s each
    assert thumbnail_loaded(driver, job_id) == 320
    driver.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"] [data-open]').click()
    check_video_plays(driver, 2.0)
    assert console_errors(driver) == []


def test_live_progress_cancel_and_errors(web_daemon, browser):
    """The test kind `probe` (tests/plugins) runs as long as asked: progress moves in the row,
    Cancel stops it, and a failed job shows its error message."""
    driver = browser
    open_page(driver, web_daemon.api)
    driver.execute_script(WATCH_ROWS, "no-reload")
    slow = submit_json(driver, {"id": "web-slow", "kind": "probe", "params": {"seconds": 60, "step_seconds": 0.2}})
    wait_js(driver, "const b = document.querySelector('tr[data-job-id=\"web-slow\"] .progress');"
                    "return b && +b.dataset.progress >= 2;", "progress of the running job", 30)
    assert row_state(driver, slow) == "running"
    stage = driver.find_element(By.CSS_SELECTOR, 'tr[data-job-id="web-slow"] .stage').text
    assert "probing" in stage, stage
    driver.find_element(By.CSS_SELECTOR, 'tr[data-job-id="web-slow"] .cancel').click()
    wait_row(driver, slow, "canceled", 30)
    assert not driver.find_element(By.CSS_SELECTOR, 'tr[data-job-id="web-slow"] .cancel').is_displayed()
    progress = [int(k.split(":")[1]) for k in driver.execute_script("return window.__seen['web-slow']")
                if k.startswith("running:")]
    assert len(set(progress)) >= 2, progress  # it moved while we watched

    failing = submit_json(driver, {"id": "web-fail", "kind": "probe", "params": {"fail": "internal"}})
    wait_row(driver, failing, "failed", 30)
    wait_js(driver, "return document.querySelector('tr[data-job-id=\"web-fail\"] .stage').textContent"
                    ".includes('asked to fail')", "the error message in the row", 10)
    driver.find_element(By.CSS_SELECTOR, 'tr[data-job-id="web-fail"] .details-button').click()
    error = wait_js(driver, "const e = document.querySelector('#details-error'); return e && e.textContent;", "#details-error")
    assert error.startswith("internal: asked to fail"), error

    driver.find_element(By.ID, "details-close").click()
    refused = driver.find_element(By.ID, "job-json")
    refused.clear()
    refused.send_keys("[1, 2]")
    driver.find_element(By.ID, "submit-json").click()
    assert "must be a JSON object" in driver.find_element(By.ID, "submit-status").text
    assert driver.execute_script("return window.__testMarker") == "no-reload"


# Each change of the one device card and of one job's row, as one list of snapshots taken
# after every DOM change (what a person sees at any moment).
WATCH_CARD = """
const id = arguments[0];
window.__cards = [];
const snap = () => {
  const tr = document.querySelector(`#jobs-body tr[data-job-id="${id}"]`);
  const card = document.querySelector('#devices [data-device]');
  const link = card && card.querySelector('.device-job .job-link');
  const s = {row: tr ? tr.dataset.state : null, status: card && card.dataset.status, busy: card && card.dataset.busy,
             job: link ? link.textContent : null, models: card && card.querySelector('.device-models').textContent};
  const last = window.__cards[window.__cards.length - 1];
  if (!last || JSON.stringify(last) !== JSON.stringify(s)) window.__cards.push(s);
};
snap();
new MutationObserver(snap).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def test_the_device_card_follows_the_status_events(tiny_models, tmp_path, browser):
    """While a job runs the card names it and its model (loaded inside the job, so the
    worker reports it only at the end), from the same event that turns its row to running;
    the event of its end turns the card idle at once. Not the 2 s queue poll."""
    d = Daemon(tmp_path / "spool", workers=["cpu"], VIDSPOOL_REGISTRY__DIR=str(tiny_models)).start()
    driver = browser
    try:
        open_page(driver, d.api)
        driver.execute_script(WATCH_CARD, "web-model")
        job_id = submit_json(driver, {"id": "web-model", "kind": "text-to-video", "model": "wan-t2v", "params": {
            "prompt": "a fox in snow", "width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 4}})
        wait_js(driver, "return (window.__cards || []).some(s => s.row === 'running')", "the row running", 60)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "web-page-device-busy.png"))
        wait_row(driver, job_id, "completed", 180)
        cards = driver.execute_script("return window.__cards")
        running = [c for c in cards if c["row"] == "running"]
        assert running, cards
        for card in running:
            assert (card["status"], card["busy"], card["job"]) == ("busy", "true", job_id), cards
            assert "wan-t2v" in card["models"], cards
        ended = next(c for c in cards if c["row"] == "completed")
        assert (ended["status"], ended["busy"], ended["job"]) == ("idle", "false", None), cards
        # The queue's own word afterwards: the worker holds the model it loaded.
        wait_js(driver, "return document.querySelector('#devices .device-models').textContent.includes('wan-t2v')"
                        " && document.querySelector('#devices [data-device]').dataset.status === 'idle'",
                "the idle card with the model the worker holds", 10)
        assert console_errors(driver) == []
    finally:
        d.stop()


def test_page_falls_back_to_polling_without_the_event_stream(web_daemon, browser):
    driver = browser
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/v1/events*"]})
    open_page(driver, web_daemon.api, expect_live="polling")
    driver.execute_script(WATCH_ROWS, "no-reload")
    job_id = submit_json(driver, {"id": "web-poll", "kind": "slideshow", "params": {"slides": ["Polled"], **TINY}})
    wait_row(driver, job_id, "completed")
    assert driver.execute_script("return window.__testMarker") == "no-reload"
    assert driver.execute_script("return document.querySelector('#live').dataset.mode") == "polling"
    assert thumbnail_loaded(driver, job_id) == 320


def test_phone_layout(web_daemon):
    if not any(j["state"] == "completed" for j in api_get(web_daemon.api, "/api/v1/jobs")["jobs"]):
        req = urllib.request.Request(web_daemon.api + "/api/v1/jobs", method="POST",
                                     data=json.dumps({"id": "phone", "kind": "slideshow",
                                                      "params": {"slides": ["Phone"], **TINY}}).encode())
        urllib.request.urlopen(req, timeout=10).close()
        wait_status(web_daemon.root, "phone", timeout=60)
    driver = make_browser(mobile=True)
    try:
        open_page(driver, web_daemon.api)
        assert driver.execute_script("return window.innerWidth") == 390  # the viewport meta works
        wait_js(driver, "return document.querySelector('#jobs-body tr[data-state=\"completed\"] img.thumb')"
                        "?.naturalWidth > 0", "a completed job with its thumbnail")
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
        font = driver.execute_script("return parseFloat(getComputedStyle(document.body).fontSize)")
        assert font >= 14
        ARTIFACTS.mkdir(exist_ok=True)
        time.sleep(0.5)
        driver.save_screenshot(str(ARTIFACTS / "web-page-phone.png"))
        for tab in ("tab-json", "tab-fields"):
            driver.find_element(By.ID, tab).click()
            assert driver.execute_script("return document.documentElement.scrollWidth") <= 390, tab
        driver.execute_script("document.querySelector('#jobs-body tr[data-state=\"completed\"] .details-button').click()")
        wait_js(driver, "const v = document.querySelector('#details video'); return v && v.readyState >= 1",
                "the preview on the phone")
        width = driver.execute_script("return Math.max(document.documentElement.scrollWidth,"
                                      " document.querySelector('#details').getBoundingClientRect().right,"
                                      " document.querySelector('#details').scrollWidth)")
        assert width <= 390
        driver.save_screenshot(str(ARTIFACTS / "web-page-phone-details.png"))
    finally:
        driver.quit()


def test_token_prompt_then_everything_works_with_the_token(tmp_path, browser):
    """With [api] tokens the page asks for one, keeps it, and sends it on fetches (header)
    and on URLs the browser loads itself: the event stream, thumbnails, the video."""
    d = Daemon(tmp_path / "spool", workers=["cpu"], VIDSPOOL_API__TOKENS=json.dumps(["s3cret-token"])).start()
    driver = browser
    try:
        driver.get(d.api + "/")
        wait_js(driver, "return !document.querySelector('#auth').hidden", "the token field")
        driver.find_element(By.ID, "token").send_keys("wrong")
        driver.find_element(By.ID, "token-save").click()
        wait_js(driver, "return !document.querySelector('#auth').hidden && !document.querySelector('#error-banner').hidden",
                "the wrong token refused")
        driver.find_element(By.ID, "token").send_keys("s3cret-token")
        driver.find_element(By.ID, "token-save").click()
        wait_js(driver, "return document.querySelector('#auth').hidden", "the token accepted")
        wait_js(driver, "return document.querySelectorAll('#kind option').length > 0", "info with the token")
        wait_js(driver, "return document.querySelector('#live').dataset.mode === 'sse'", "events with ?access_token=")
        assert driver.execute_script("return localStorage.getItem('vidspool.token')") == "s3cret-token"

        driver.refresh()  # the stored token is used at once
        open_page(driver, d.api)
        assert driver.execute_script("return document.querySelector('#auth').hidden")
        driver.execute_script(WATCH_ROWS, "no-reload")
        job_id = submit_json(driver, {"id": "web-auth", "kind": "slideshow", "params": {"slides": ["Locked"], **TINY}})
        wait_row(driver, job_id, "completed")
        assert thumbnail_loaded(driver, job_id) == 320
        driver.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"] .details-button').click()
        check_video_plays(driver, 1.0)
        assert api_get(d.api, f"/api/v1/jobs/{job_id}", "s3cret-token")["state"] == "completed"
    finally:
        d.stop()
