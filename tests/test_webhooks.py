"""Signed webhooks (SPEC §10.1): a real HTTP receiver on loopback checks every delivery's
signature with the Standard Webhooks library's own `Webhook.verify`; retries until it
answers 2xx, with one webhook-id across attempts and across a SIGKILL of the daemon; the
journal records each attempt; job files may only name allowed URLs (SSRF), redirects are
never followed; events are filtered and progress throttled; presets and [webhooks] default
apply unless a job names its own."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import signal
import socket
import threading
import time
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support import Daemon, drop_json, holds, wait_all_final, wait_for, wait_status

SECRET = "whsec_" + base64.b64encode(b"vidspool webhook test key 32 by").decode()
QUICK = {"kind": "probe"}  # finishes at once


class Receiver:
    """A webhook receiver: answers each path from a script (the last answer repeats), and
    records every request with whether its signature verified."""

    def __init__(self, address: str = "127.0.0.1"):
        self.hook = Webhook(SECRET)
        self.got: list[dict] = []
        self.connections = 0  # TCP connections accepted, requests or not
        self.script: dict[str, list[tuple[int, dict]]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                headers = dict(self.headers.items())
                try:
                    receiver.hook.verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                with receiver.lock:
                    receiver.got.append({"path": self.path, "headers": {k.lower(): v for k, v in headers.items()},
                                         "body": json.loads(body) if body else {}, "verified": verified, "at": time.time()})
                    answers = receiver.script.get(self.path) or [(200, {})]
                    code, extra = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(code)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_POST  # a followed redirect would arrive as a GET

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def verify_request(self, request, client_address):
                with receiver.lock:
                    receiver.connections += 1
                return True

        self.server = Server((address, 0), Handler)
        self.base = f"http://{address}:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str, *answers: int | tuple[int, dict]) -> str:
        with self.lock:
            self.script[path] = [a if isinstance(a, tuple) else (a, {}) for a in answers]
        return self.base + path

    def at(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.got if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_env(rx: Receiver, **extra: str) -> dict[str, str]:
    return {"VIDSPOOL_WEBHOOKS__SECRET": SECRET,
            "VIDSPOOL_WEBHOOKS__ALLOWED_URLS": json.dumps([f"{rx.base}/hooks/", "https://", "http://"]),
            "VIDSPOOL_WEBHOOKS__RETRY_SECONDS": "0.2", "VIDSPOOL_WEBHOOKS__MAX_ATTEMPTS": "4",
            "VIDSPOOL_WEBHOOKS__PROGRESS_SECONDS": "0.6", "VIDSPOOL_WEBHOOKS__TIMEOUT_SECONDS": "5",
            "VIDSPOOL_STATUS__PROGRESS_INTERVAL_SECONDS": "0.1", **extra}


def journal(root: Path, job_id: str) -> list[dict]:
    try:
        return [json.loads(line) for line in (root / "outbox" / job_id / "webhooks.jsonl").read_text().splitlines()]
    except FileNotFoundError:
        return []


def markers(root: Path, host: str = "test-host") -> list[str]:
    return sorted(os.listdir(root / "webhooks" / host))


def wait_journal(root: Path, job_id: str, last_result: str, daemon: Daemon, timeout: float = 20) -> list[dict]:
    try:
        wait_for(lambda: journal(root, job_id)[-1:] and journal(root, job_id)[-1]["result"] == last_result, timeout,
                 f"{job_id}: journal ending {last_result}")
    except AssertionError:
        raise AssertionError(f"{journal(root, job_id)}\n{daemon.log()}") from None
    return journal(root, job_id)


@pytest.fixture(scope="module")
def rx():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def hooked(rx, tmp_path_factory):
    """One daemon for most tests: a [webhooks] default and a preset with a webhook of its own."""
    root = tmp_path_factory.mktemp("webhooks") / "spool"
    done = root.parent / "done"
    done.mkdir()
    presets = {"hooked": {"kind": "probe", "webhook": {"url": f"{rx.base}/preset/", "events": ["completed"]}},
               "strict": {"kind": "probe", "webhook": {"url": f"{rx.base}/strict/", "events": ["failed"]}},
               "delivered": {"kind": "probe", "deliver_to": str(done),
                             "webhook": {"url": f"{rx.base}/hooks/delivered", "events": ["completed"]}}}
    d = Daemon(root, **webhook_env(rx, VIDSPOOL_WEBHOOKS__DEFAULT=json.dumps({"url": f"{rx.base}/default/"}),
                                   VIDSPOOL_PRESETS=json.dumps(presets))).start()
    yield d
    d.stop()


def test_500_three_times_then_200_is_delivered_on_the_fourth_attempt(rx, hooked):
    url = rx.answer("/hooks/flaky", 500, 500, 500, 200)
    drop_json(hooked.root / "inbox", "flaky", {**QUICK, "webhook": {"url": url}})
    done = wait_status(hooked.root, "flaky", daemon=hooked)
    assert done["state"] == "completed"
    lines = wait_journal(hooked.root, "flaky", "delivered", hooked)
    assert [(j["attempt"], j["status"], j["result"]) for j in lines] == [
        (1, 500, "retry"), (2, 500, "retry"), (3, 500, "retry"), (4, 200, "delivered")]
    assert all(j["url"] == url and j["event"] == "completed" and j["seconds"] >= 0 for j in lines)
    got = rx.at("/hooks/flaky")
    assert len(got) == 4 and all(r["verified"] for r in got)
    assert len({r["headers"]["webhook-id"] for r in got}) == 1 == len({j["webhook_id"] for j in lines})
    assert got[0]["headers"]["webhook-id"] == lines[0]["webhook_id"]
    assert got[0]["headers"]["webhook-signature"].startswith("v1,")
    body = got[-1]["body"]
    assert body["type"] == "job.completed" and body["data"]["id"] == "flaky" and body["data"]["state"] == "completed"
    assert body["data"]["result"]["files"][0]["name"] == "probe.txt"
    # the waits doubled from retry_seconds (0.2, 0.4, 0.8 s)
    gaps = [b["at"] - a["at"] for a, b in zip(got, got[1:])]
    assert gaps[0] >= 0.15 and gaps[1] >= 0.35 and gaps[2] >= 0.7, gaps
    wait_for(lambda: not markers(hooked.root), 5, "the marker removed once delivered")
    events = [e["event"] for e in hooked.log_events() if e.get("job_id") == "flaky" and e["event"].startswith("webhook.")]
    assert events == ["webhook.retry"] * 3 + ["webhook.delivered"]
    with urllib.request.urlopen(hooked.api + "/metrics", timeout=10) as r:
        counted = dict(re.findall(r'^vidspool_webhook_deliveries_total\{result="(\w+)"\} (\S+)$', r.read().decode(), re.M))
    assert float(counted["retry"]) >= 3 and float(counted["delivered"]) >= 1, counted


def test_a_redirect_is_never_followed(rx, hooked):
    url = rx.answer("/hooks/moved", (302, {"location": f"{rx.base}/hooks/elsewhere"}))
    drop_json(hooked.root / "inbox", "moved", {**QUICK, "webhook": {"url": url}})
    lines = wait_journal(hooked.root, "moved", "given_up", hooked)
    assert [(j["status"], j["result"]) for j in lines] == [(302, "retry")] * 3 + [(302, "given_up")]
    assert "redirect" in lines[0]["error"] and "not followed" in lines[0]["error"]
    assert len(rx.at("/hooks/moved")) == 4
    assert rx.at("/hooks/elsewhere") == []
    assert any(e["event"] == "webhook.given_up" and e.get("job_id") == "moved" for e in hooked.log_events())


def test_job_file_urls_outside_allowed_urls_or_private_are_invalid_and_nothing_is_sent(rx, hooked):
    port = rx.server.server_port
    bad = {
        "outside": f"http://127.0.0.1:{port}/other/x",  # not under any prefix
        "loopback-under-broad-prefix": f"https://127.0.0.1:{port}/hooks/x",  # only "https://" matches: public only
        "private": "https://10.1.2.3/hooks",
        "localhost-name": f"http://localhost:{port}/hooks/x",
        "6to4-of-loopback": f"http://[2002:7f00:1::]:{port}/hooks/x",  # 127.0.0.1 inside an IPv6 address
    }
    for name, url in bad.items():
        drop_json(hooked.root / "inbox", name, {**QUICK, "webhook": {"url": url, "events": ["failed"]}})
    for name in bad:
        doc = wait_status(hooked.root, name, daemon=hooked)
        assert doc["state"] == "failed" and doc["error"]["code"] == "invalid_job", doc
        assert doc["error"]["message"].startswith("webhook.url: ")
    assert "allowed_urls" in wait_status(hooked.root, "outside")["error"]["message"]
    assert "loopback" in wait_status(hooked.root, "loopback-under-broad-prefix")["error"]["message"]
    assert "private" in wait_status(hooked.root, "private")["error"]["message"]
    assert "carries 127.0.0.1 is a loopback" in wait_status(hooked.root, "6to4-of-loopback")["error"]["message"]
    # a control job afterwards is delivered: by then anything the invalid ones sent would be here
    url = rx.answer("/hooks/control", 200)
    drop_json(hooked.root / "inbox", "control", {**QUICK, "webhook": {"url": url}})
    wait_journal(hooked.root, "control", "delivered", hooked)
    assert [r for r in rx.got if r["path"].startswith("/other") or r["body"].get("data", {}).get("id") in bad] == []
    assert all(journal(hooked.root, name) == [] for name in bad)


def test_hosts_a_client_reads_otherwise_are_invalid_at_the_job_check_and_never_connected(rx, hooked):
    # Each is 127.0.0.1 (or the receiver itself) to some HTTP client, and no host name or
    # address as written to the check: refused before anything connects.
    port = rx.server.server_port
    odd = {"percent": f"http://%31%32%37.0.0.1:{port}/hooks/x", "one-number": f"http://2130706433:{port}/hooks/x",
           "short-dotted": f"http://127.1:{port}/hooks/x", "hex": f"http://0x7f.0.0.1:{port}/hooks/x",
           "octal": f"http://0177.0.0.1:{port}/hooks/x", "user-at": f"http://hooks.example.org@127.0.0.1:{port}/hooks/x"}
    before = rx.connections
    for name, url in odd.items():
        drop_json(hooked.root / "inbox", name, {**QUICK, "webhook": {"url": url}})
    for name in odd:
        doc = wait_status(hooked.root, name, daemon=hooked)
        assert doc["state"] == "failed" and doc["error"]["code"] == "invalid_job", doc
        assert doc["error"]["message"].startswith("webhook.url: "), doc["error"]
    assert "%-encoded" in wait_status(hooked.root, "percent")["error"]["message"]
    assert "IPv4" in wait_status(hooked.root, "one-number")["error"]["message"]
    assert "user name" in wait_status(hooked.root, "user-at")["error"]["message"]
    url = rx.answer("/hooks/after-odd", 200)  # a control: by then anything they sent would be here
    drop_json(hooked.root / "inbox", "after-odd", {**QUICK, "webhook": {"url": url}})
    wait_journal(hooked.root, "after-odd", "delivered", hooked)
    assert rx.connections - before == 1 and all(journal(hooked.root, name) == [] for name in odd)


def test_events_filter_and_progress_throttle(rx, hooked):
    url = rx.answer("/hooks/events", 200)
    drop_json(hooked.root / "inbox", "three", {"kind": "probe", "params": {"seconds": 1.0, "step_seconds": 0.05},
                                               "webhook": {"url": url, "events": ["queued", "running", "completed"]}})
    wait_journal(hooked.root, "three", "delivered", hooked)
    wait_for(lambda: len(journal(hooked.root, "three")) == 3, 10, "three events")
    got = sorted((r for r in rx.at("/hooks/events") if r["body"]["data"]["id"] == "three"), key=lambda r: r["at"])
    assert [r["body"]["type"] for r in got] == ["job.queued", "job.running", "job.completed"]
    assert all(r["verified"] for r in got) and len({r["headers"]["webhook-id"] for r in got}) == 3

    url = rx.answer("/hooks/progress", 200)
    drop_json(hooked.root / "inbox", "slow", {"kind": "probe", "params": {"seconds": 2.4, "step_seconds": 0.05},
                                              "webhook": {"url": url, "events": ["progress"]}})
    assert wait_status(hooked.root, "slow", daemon=hooked)["state"] == "completed"
    wait_for(lambda: rx.at("/hooks/progress") and not markers(hooked.root), 10, "progress events sent")
    got = rx.at("/hooks/progress")
    assert {r["body"]["type"] for r in got} == {"job.progress"}
    # ~24 running writes (status every 0.1 s) at most every progress_seconds = 0.6 s: 2 to 4 events
    assert 2 <= len(got) <= 4, [r["body"]["data"]["progress"] for r in got]
    stamps = sorted(datetime.fromisoformat(r["body"]["data"]["updated_at"].replace("Z", "+00:00")).timestamp() for r in got)
    assert all(b - a >= 0.55 for a, b in zip(stamps, stamps[1:])), stamps
    progress = [r["body"]["data"]["progress"] for r in sorted(got, key=lambda r: r["body"]["data"]["updated_at"])]
    assert progress == sorted(progress) and progress[-1] < 100


def test_preset_and_config_webhooks_apply_and_a_job_file_overrides_them(rx, hooked):
    rx.answer("/default/", 200)
    rx.answer("/preset/", 200)
    own = rx.answer("/hooks/own", 200)
    drop_json(hooked.root / "inbox", "plain", QUICK)
    drop_json(hooked.root / "inbox" / "hooked", "by-preset", {})
    drop_json(hooked.root / "inbox" / "hooked", "own", {"webhook": {"url": own, "events": ["completed"]}})
    for job_id, source in (("plain", "config"), ("by-preset", "preset"), ("own", "job")):
        doc = wait_status(hooked.root, job_id, daemon=hooked)
        assert doc["job"]["webhook"]["source"] == source, doc["job"]
        wait_journal(hooked.root, job_id, "delivered", hooked)
    ids = lambda path: [r["body"]["data"]["id"] for r in rx.at(path)]  # noqa: E731
    assert "plain" in ids("/default/") and ids("/preset/") == ["by-preset"] and ids("/hooks/own") == ["own"]
    assert "by-preset" not in ids("/default/") and "own" not in ids("/default/") + ids("/preset/")
    assert wait_status(hooked.root, "plain")["job"]["webhook"]["events"] == ["completed", "failed", "canceled"]


def test_an_invalid_job_reports_failed_to_its_preset_or_default_webhook_never_to_its_own(rx, hooked):
    rx.answer("/strict/", 200)
    rx.answer("/default/", 200)
    own = rx.answer("/hooks/own-invalid", 200)
    inbox = hooked.root / "inbox"
    drop_json(inbox / "strict", "bad-in-preset", {"priority": "high"})
    drop_json(inbox, "bad-plain", {"kind": "probe", "priority": "high"})
    # the job file names its own webhook: not trusted, and it replaces the default: nothing is sent
    drop_json(inbox, "bad-own", {"kind": "probe", "priority": "high", "webhook": {"url": own, "events": ["failed"]}})
    for job_id in ("bad-in-preset", "bad-plain", "bad-own"):
        doc = wait_status(hooked.root, job_id, daemon=hooked)
        assert doc["state"] == "failed" and doc["error"]["code"] == "invalid_job", doc
    assert wait_status(hooked.root, "bad-in-preset")["job"]["webhook"]["source"] == "preset"
    wait_journal(hooked.root, "bad-in-preset", "delivered", hooked)
    wait_journal(hooked.root, "bad-plain", "delivered", hooked)
    [got] = rx.at("/strict/")
    assert got["verified"] and got["body"]["type"] == "job.failed"
    data = got["body"]["data"]
    assert data["id"] == "bad-in-preset" and data["state"] == "failed" and data["error"]["code"] == "invalid_job"
    assert "priority" in data["error"]["message"]
    by_default = [r for r in rx.at("/default/") if r["body"]["data"]["id"] == "bad-plain"]
    assert len(by_default) == 1 and by_default[0]["verified"] and by_default[0]["body"]["type"] == "job.failed"
    assert [r for r in rx.at("/default/") if r["body"]["data"]["id"] == "bad-in-preset"] == []
    holds(lambda: not [r for r in rx.got if r["body"].get("data", {}).get("id") == "bad-own"], 0.5, "nothing for bad-own")
    assert journal(hooked.root, "bad-own") == [] and "webhook" not in wait_status(hooked.root, "bad-own")["job"]


def sender_pid(d: Daemon) -> int | None:
    started = [e["pid"] for e in d.log_events() if e["event"] == "webhook.sender_started"]
    return started[-1] if started else None


def test_a_stopped_sender_never_holds_up_the_daemon_and_gets_every_event_after(rx, tmp_path):
    root = tmp_path / "spool"
    url = rx.answer("/hooks/burst", 200)
    d = Daemon(root, **webhook_env(rx)).start()
    try:
        wait_for(lambda: sender_pid(d), 20, "the sender process started")
        pid = sender_pid(d)
        os.kill(pid, signal.SIGSTOP)
        try:
            pad = "x" * 4000  # twice in each body: ~10 kB a message, so the pipe fills after a few dozen
            ids = [f"burst-{i:02d}" for i in range(60)]
            for job_id in ids:
                drop_json(root / "inbox", job_id, {**QUICK, "labels": {"pad": pad},
                                                   "webhook": {"url": url, "events": ["queued", "running", "completed"]}})
            docs = wait_all_final(root, ids, timeout=60, daemon=d)
            assert {doc["state"] for doc in docs.values()} == {"completed"}
            beat = d.heartbeat["counter"]
            wait_for(lambda: d.heartbeat.get("counter", 0) >= beat + 3, 10, "heartbeats going on")
            assert rx.at("/hooks/burst") == [], "the sender was not stopped"
            assert len(markers(root)) == 3 * len(ids)
            assert any(e["event"] == "webhook.sender_behind" for e in d.log_events())  # wake-ups were dropped
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: len(rx.at("/hooks/burst")) >= 3 * len(ids) and not markers(root), 60, "every event delivered")
        holds(lambda: len(rx.at("/hooks/burst")) == 3 * len(ids), 0.5, "no event twice")
        got = rx.at("/hooks/burst")
        assert all(r["verified"] for r in got) and len({r["headers"]["webhook-id"] for r in got}) == len(got)
        assert sorted((r["body"]["data"]["id"], r["body"]["type"]) for r in got) == sorted(
            (job_id, f"job.{event}") for job_id in ids for event in ("queued", "running", "completed"))
        assert sender_pid(d) == pid  # the same process: nothing was restarted to get there
    finally:
        d.stop()


def test_a_final_status_written_again_is_not_a_second_event(rx, hooked, tmp_path):
    # A delivery folder rewrites the completed status with result.delivered ...
    rx.answer("/hooks/delivered", 200)
    drop_json(hooked.root / "inbox" / "delivered", "copied", {})
    wait_for(lambda: (wait_status(hooked.root, "copied").get("result") or {}).get("delivered"), 20, "delivered to the folder")
    wait_journal(hooked.root, "copied", "delivered", hooked)
    # ... and recovery redoes a publish a crash cut short right after the final status was written.
    root = tmp_path / "spool"
    url = rx.answer("/hooks/redo", 200)
    d = Daemon(root, **webhook_env(rx))
    d.start(env={"VIDSPOOL_TEST_CRASH_AT": "publish.status_written"})
    drop_json(root / "inbox", "redo", {**QUICK, "webhook": {"url": url}})
    d.proc.wait(30)
    assert d.proc.returncode == -signal.SIGKILL
    assert len(markers(root)) == 1  # recorded by the status write, not sent before the crash
    d.start()
    try:
        wait_journal(root, "redo", "delivered", d)
        # the restart finished the publish (the crash came before its job.completed line): status written again
        assert any(e["event"] == "job.completed" and e.get("job_id") == "redo" for e in d.log_events())
        holds(lambda: len(rx.at("/hooks/redo")) == 1, 0.5, "no second event arrives")
        assert [j["result"] for j in journal(root, "redo")] == ["delivered"]
    finally:
        d.stop()
    assert len(rx.at("/hooks/delivered")) == 1 and [j["result"] for j in journal(hooked.root, "copied")] == ["delivered"]


def test_sigkill_with_a_delivery_pending_then_restart_delivers_the_same_webhook_id(rx, tmp_path):
    root = tmp_path / "spool"
    url = rx.answer("/hooks/crash", 500)
    d = Daemon(root, **webhook_env(rx, VIDSPOOL_WEBHOOKS__MAX_ATTEMPTS="100")).start()
    try:
        drop_json(root / "inbox", "crash", {**QUICK, "webhook": {"url": url}})
        wait_status(root, "crash", daemon=d)
        wait_for(lambda: len(rx.at("/hooks/crash")) >= 2, 20, "two failed attempts")
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait()
    finally:
        d.kill()
    pending = markers(root)
    assert len(pending) == 1
    first_id = rx.at("/hooks/crash")[0]["headers"]["webhook-id"]
    assert pending == [f"{first_id}.json"]
    tried = len(rx.at("/hooks/crash"))
    rx.answer("/hooks/crash", 200)
    d.start()
    try:
        lines = wait_journal(root, "crash", "delivered", d)
        got = rx.at("/hooks/crash")
        assert all(r["verified"] for r in got) and {r["headers"]["webhook-id"] for r in got} == {first_id}
        assert got[-1]["body"]["data"]["state"] == "completed"
        assert [j["result"] for j in lines].count("delivered") == 1
        assert {j["webhook_id"] for j in lines} == {first_id}
        assert any(e["event"] == "webhook.resumed" and e.get("webhook_id") == first_id for e in d.log_events())
        wait_for(lambda: not markers(root), 5, "marker removed")
        assert len(got) == tried + 1  # one attempt after the restart, and it was delivered
        holds(lambda: len(rx.at("/hooks/crash")) == tried + 1, 0.5, "nothing more is sent for it")
    finally:
        d.stop()


def test_a_job_file_webhook_needs_the_signing_secret(rx, tmp_path):
    root = tmp_path / "spool"
    d = Daemon(root, VIDSPOOL_WEBHOOKS__ALLOWED_URLS=json.dumps([f"{rx.base}/hooks/"])).start()
    try:
        drop_json(root / "inbox", "unsigned", {**QUICK, "webhook": {"url": f"{rx.base}/hooks/unsigned"}})
        doc = wait_status(root, "unsigned", daemon=d)
        assert doc["state"] == "failed" and doc["error"]["code"] == "invalid_job"
        assert "[webhooks] secret" in doc["error"]["message"]
        assert (root / "outbox" / "unsigned" / "input" / "unsigned.json").is_file()  # the user's file kept
        assert rx.at("/hooks/unsigned") == []
    finally:
        d.stop()


def loopback_name() -> tuple[str, str] | None:
    """A host name that the job check takes (not `localhost`) and that resolves here to
    addresses that are not public only (this host's own name, or another in /etc/hosts),
    with one of those addresses; None if there is none."""
    import ipaddress
    import socket

    from daemon.webhooks.urls import address_problem, job_url_problem

    names = [socket.gethostname()]
    try:
        names += [n for line in Path("/etc/hosts").read_text().splitlines() for n in line.split("#")[0].split()[1:]]
    except OSError:
        pass
    for name in names:
        if job_url_problem(f"http://{name}:9/", ["http://"]) is not None:
            continue
        try:
            found = {i[4][0] for i in socket.getaddrinfo(name, 9, socket.AF_INET, socket.SOCK_STREAM)}
        except OSError:
            continue
        if found and all(address_problem(a) for a in found) and not all(ipaddress.ip_address(a).is_global for a in found):
            return name, sorted(found)[0]
    return None


def test_a_name_that_validates_then_resolves_to_loopback_is_refused_and_never_connected(tmp_path):
    # What DNS rebinding meets: the job check takes a name; the daemon resolves it once, finds
    # a loopback (or private) address and refuses it without connecting; allowed explicitly,
    # the same name reaches the receiver (so the refusal is the check, not a dead address).
    found = loopback_name()
    if found is None:
        pytest.skip("no host name here resolves to a loopback or private address only")
    name, address = found
    receiver = Receiver(address)
    port = receiver.server.server_port
    explicit = f"http://{name}:{port}/allowed/"
    root = tmp_path / "spool"
    d = Daemon(root, **webhook_env(receiver, VIDSPOOL_WEBHOOKS__ALLOWED_URLS=json.dumps([explicit, "http://"]))).start()
    try:
        drop_json(root / "inbox", "rebound", {**QUICK, "webhook": {"url": f"http://{name}:{port}/rebound/"}})
        assert wait_status(root, "rebound", daemon=d)["state"] == "completed"  # the name passed the job check
        lines = wait_journal(root, "rebound", "refused", d)
        assert len(lines) == 1 and lines[0]["status"] is None and address in lines[0]["error"], lines
        assert receiver.connections == 0  # refused before connecting: no open/closed port to tell apart
        drop_json(root / "inbox", "allowed", {**QUICK, "webhook": {"url": explicit}})
        wait_journal(root, "allowed", "delivered", d)
        assert receiver.connections >= 1 and len(receiver.at("/allowed/")) == 1 and receiver.at("/rebound/") == []
    finally:
        d.stop()
        receiver.close()


class Trickler:
    """A receiver that reads the request, then answers one byte of a never-ending header every
    `every` seconds (no read timeout ever fires); records each connection's open and close."""

    def __init__(self, every: float):
        self.every, self.lock = every, threading.Lock()
        self.spans: list[list[float | None]] = []  # [opened, closed] per connection
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        span = [time.monotonic(), None]
        with self.lock:
            self.spans.append(span)
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while True:
                conn.sendall(b"a")
                if select.select([conn], [], [], self.every)[0] and not conn.recv(1):
                    return  # the client hung up (noticed at once: the spans are what the client did)
        except OSError:  # the client hung up
            pass
        finally:
            span[1] = time.monotonic()
            conn.close()

    def most_at_once(self, slack: float = 0.5) -> int:
        """The most connections open at once, not counting overlaps under `slack` seconds (a
        closed socket is noticed here a moment after the client opened the next one)."""
        with self.lock:
            edges = sorted([(s[0] + slack, 1) for s in self.spans] + [(s[1], -1) for s in self.spans if s[1] is not None])
        at_once = most = 0
        for _, change in edges:
            at_once += change
            most = max(most, at_once)
        return most

    def close(self) -> None:
        self.sock.close()


def test_a_trickling_receiver_is_cut_at_the_deadline_and_holds_back_no_one_else(rx, tmp_path):
    slow = Trickler(every=0.5)  # a byte every 0.5 s: under any read timeout, for ever
    env = webhook_env(rx, VIDSPOOL_WEBHOOKS__TIMEOUT_SECONDS="2", VIDSPOOL_WEBHOOKS__RETRY_SECONDS="1",
                      VIDSPOOL_WEBHOOKS__MAX_ATTEMPTS="2", VIDSPOOL_WEBHOOKS__MAX_PER_HOST="2",
                      VIDSPOOL_WEBHOOKS__ALLOWED_URLS=json.dumps([f"{rx.base}/hooks/", f"{slow.base}/"]))
    root = tmp_path / "spool"
    d = Daemon(root, **env).start()
    try:
        for i in range(5):
            drop_json(root / "inbox", f"slow-{i}", {**QUICK, "webhook": {"url": f"{slow.base}/slow/{i}"}})
        wait_for(lambda: len(slow.spans) >= 2, 20, "the trickler's first connections")
        url = rx.answer("/hooks/healthy", 200)
        drop_json(root / "inbox", "healthy", {**QUICK, "webhook": {"url": url}})
        done = wait_status(root, "healthy", daemon=d)
        wait_for(lambda: rx.at("/hooks/healthy"), 10, "the healthy receiver's event")
        finished = datetime.fromisoformat(done["finished_at"].replace("Z", "+00:00")).timestamp()
        assert rx.at("/hooks/healthy")[0]["at"] - finished < 3, "the healthy receiver waited on the slow one"
        assert any(s[1] is None for s in slow.spans), "the trickler was still being waited on meanwhile"
        for i in range(5):
            lines = wait_journal(root, f"slow-{i}", "given_up", d, timeout=60)
            assert [j["result"] for j in lines] == ["retry", "given_up"], lines
            assert all(1.9 <= j["seconds"] <= 3.5 and "timeout_seconds" in j["error"] for j in lines), lines
        assert slow.most_at_once() <= 2, sorted(slow.spans)  # [webhooks] max_per_host
        cut = [s[1] - s[0] for s in slow.spans]
        assert len(cut) == 10 and all(1.9 <= c <= 3.5 for c in cut), cut
    finally:
        d.stop()
        slow.close()


def test_a_planted_marker_is_never_sent(rx, tmp_path):
    # Whoever can write the spool can write webhooks/<host>/*.json: one naming a URL no job may
    # (loopback, "source": "config") with a forged body would be signed and sent by the daemon.
    root = tmp_path / "spool"
    d = Daemon(root, **webhook_env(rx)).start()
    d.stop()
    forged = json.dumps({"type": "job.completed", "timestamp": "2030-01-01T00:00:00Z", "data": {"id": "forged"}})
    wid = "msg_" + "f" * 32
    marker = {"webhook_id": wid, "job_id": "forged", "event": "completed", "url": f"{rx.base}/planted/",
              "source": "config", "timestamp": "2030-01-01T00:00:00Z", "body": forged, "attempts": 0, "mac": "0" * 64}
    (root / "webhooks" / d.host / f"{wid}.json").write_text(json.dumps(marker))
    url = rx.answer("/hooks/after-planted", 200)
    d.start()
    try:
        drop_json(root / "inbox", "after-planted", {**QUICK, "webhook": {"url": url}})
        wait_journal(root, "after-planted", "delivered", d)  # the sender is up and took up the folder
        assert rx.at("/planted/") == [] and markers(root) == []
        assert any(e["event"] == "webhook.marker_refused" for e in d.log_events())
    finally:
        d.stop()
