"""Another web site open in the user's real browser cannot use the daemon: Debian's
chromium, headless, loads an attacker's page from another origin that tries everything a
page can do without the user's help (a multipart form, a text/plain form, `fetch` with
text/plain, a model unload, a cancel), and then a DNS-rebinding name that points at the
daemon. No job appears, nothing is unloaded, and the daemon's own page, same-origin, still
submits. Names resolve through chromium's --host-resolver-rules, so nothing leaves the
machine."""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.support import Daemon, wait_status
from tests.test_web_page import make_browser, open_page

ATTACK_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>cute cats</title></head><body>
<iframe name="sink" style="display:none"></iframe>
<form id="multipart" method="POST" action="{api}/api/v1/jobs" enctype="multipart/form-data" target="sink">
  <input name="job" value='{{"kind": "probe", "id": "csrf-multipart"}}'>
</form>
<form id="textplain" method="POST" action="{api}/api/v1/jobs" enctype="text/plain" target="sink">
  <input name='{{"kind": "probe", "id": "csrf-textform", "labels": {{"x": "' value='"}}}}'>
</form>
<script>
const api = "{api}";
const tries = [
  fetch(api + "/api/v1/jobs", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
        body: JSON.stringify({{kind: "probe", id: "csrf-fetch"}})}}),
  fetch(api + "/api/v1/jobs", {{method: "POST", mode: "no-cors", body: new Blob([JSON.stringify({{kind: "probe", id: "csrf-blob"}})])}}),
  fetch(api + "/api/v1/models/victim/unload", {{method: "POST", mode: "no-cors"}}),
  fetch(api + "/api/v1/jobs/victim", {{method: "DELETE"}}),
  fetch(api + "/api/v1/jobs", {{method: "POST", headers: {{"Content-Type": "application/json"}},
        body: JSON.stringify({{kind: "probe", id: "csrf-preflight"}})}}),
];
document.getElementById("multipart").submit();
setTimeout(() => document.getElementById("textplain").submit(), 300);
Promise.allSettled(tries).then(r => {{ window.__tried = r.map(x => x.status); }});
</script></body></html>"""


def api_answers(api: str) -> dict[tuple[str, str, str], float]:
    """(method, route, status) → count, from the daemon's /metrics."""
    text = urllib.request.urlopen(api + "/metrics", timeout=10).read().decode()
    counts = {}
    for line in text.splitlines():
        m = re.match(r'vidspool_api_requests_total\{method="([^"]+)",route="([^"]+)",status="(\d+)"\} (\S+)', line)
        if m:
            counts[m.group(1, 2, 3)] = float(m.group(4))
    return counts


@pytest.fixture(scope="module")
def daemon_for_browser(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("browser-guard") / "spool", workers=["cpu"]).start()
    yield d
    d.stop()


@pytest.fixture
def attacker_site():
    """An HTTP server of the attacker's on its own port, serving one page per test."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, b"not found")
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], pages
    server.shutdown()
    server.server_close()


@pytest.fixture
def resolving_browser():
    driver = make_browser(extra_args=("--host-resolver-rules=MAP attacker.test 127.0.0.1, MAP rebind.test 127.0.0.1",))
    yield driver
    driver.quit()


def test_another_sites_page_cannot_submit_cancel_or_unload(daemon_for_browser, attacker_site, resolving_browser):
    d = daemon_for_browser
    drop = d.root / "inbox"
    port, pages = attacker_site
    pages["/cats.html"] = ATTACK_PAGE.format(api=d.api).encode()
    (drop / ".victim.json.part").write_text(json.dumps({"kind": "probe", "id": "victim", "params": {"seconds": 60}}))
    os.rename(drop / ".victim.json.part", drop / "victim.json")
    wait_status(d.root, "victim", {"running"}, daemon=d)

    resolving_browser.get(f"http://attacker.test:{port}/cats.html")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and resolving_browser.execute_script("return window.__tried || null") is None:
        time.sleep(0.1)
    assert resolving_browser.execute_script("return window.__tried || null") is not None, "the attack page did not run"
    time.sleep(2)  # the text/plain form goes last; let the daemon take any drop it would make

    assert not [n for n in os.listdir(d.root / "outbox") if n.startswith("csrf")], os.listdir(d.root / "outbox")
    assert wait_status(d.root, "victim", {"running"}, daemon=d)["state"] == "running"  # not canceled
    refused = [e for e in d.log_events() if e.get("event") == "api.cross_origin_refused"]
    assert {e["origin"] for e in refused} == {f"http://attacker.test:{port}"}, refused
    assert {(e["method"], e["path"]) for e in refused} == {("POST", "/api/v1/jobs"), ("POST", "/api/v1/models/victim/unload")}
    # The two forms and the two no-cors posts reach the daemon and are refused (the log says
    # it once: identical warnings are written once per 30 s); the DELETE and the JSON post
    # stop at their preflight, which is refused too.
    answers = api_answers(d.api)
    assert answers.get(("POST", "/api/v1/jobs", "403"), 0) >= 4, answers
    assert answers.get(("POST", "/api/v1/models/{name}/unload", "403")) == 1, answers
    assert answers.get(("OPTIONS", "unmatched", "403"), 0) + answers.get(("OPTIONS", "/api/v1/jobs", "403"), 0) >= 1, answers
    assert not [k for k in answers if k[2].startswith("2") and k[0] != "GET"], answers
    (drop / "victim.cancel").touch()
    wait_status(d.root, "victim", daemon=d)


def test_a_rebound_name_gets_nothing(daemon_for_browser, resolving_browser):
    port = urlsplit(daemon_for_browser.api).port
    for path in ("/", "/api/v1/jobs", "/api/v1/jobs/victim"):
        resolving_browser.get(f"http://rebind.test:{port}{path}")
        text = resolving_browser.find_element("tag name", "body").text
        assert "misdirected_request" in text, (path, text[:300])
        assert "victim" not in text.replace("/api/v1/jobs/victim", "")


def test_the_daemons_own_page_still_submits(daemon_for_browser, resolving_browser):
    d = daemon_for_browser
    open_page(resolving_browser, d.api)
    result = resolving_browser.execute_async_script("""
      const done = arguments[arguments.length - 1];
      Promise.all([
        fetch("/api/v1/jobs", {method: "POST", headers: {"Content-Type": "application/json"},
              body: JSON.stringify({kind: "probe", id: "same-origin"})}).then(r => r.status),
        fetch("/api/v1/jobs", {method: "POST", headers: {"Content-Type": "text/plain"},
              body: JSON.stringify({kind: "probe", id: "same-origin-text"})}).then(r => r.status),
      ]).then(done, e => done(String(e)));""")
    assert result == [202, 415], result
    assert wait_status(d.root, "same-origin", daemon=d)["state"] == "completed"
    assert not (d.root / "outbox" / "same-origin-text").exists()
