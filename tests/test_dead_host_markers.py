"""What a dead host still owed besides its jobs (SPEC §10.1, §10.3): its webhook events and
delivery copies are taken over by a live host that shares the spool, with its jobs, and each
is sent or copied once. Real daemons on one spool: hosts A and C are SIGKILLed and never come
back, host B takes over; and a host that was only stalled lets go of what was taken from it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from daemon.webhooks.send import marker_mac
from tests.support import Daemon, drop_json, holds, leftovers, wait_for, wait_status
from tests.test_webhooks import SECRET, Receiver, journal, wait_journal, webhook_env


def owed(root, host: str) -> list[str]:
    return sorted(os.listdir(root / "webhooks" / host)) + sorted(os.listdir(root / "deliveries" / host))


def test_dead_hosts_pending_webhooks_and_deliveries_are_taken_over_and_each_done_once(tmp_path):
    rx = Receiver()
    root, done = tmp_path / "spool", tmp_path / "done"  # done/ is missing while A and C live: their copies fail
    presets = {"handed": {"kind": "probe", "deliver_to": str(done), "deliver_retry_seconds": 0.2,
                          "webhook": {"url": f"{rx.base}/hooks/handed", "events": ["completed"]}}}
    env = webhook_env(rx, VIDSPOOL_WEBHOOKS__MAX_ATTEMPTS="100", VIDSPOOL_PRESETS=json.dumps(presets))
    rx.answer("/hooks/handed", 503)  # the dying hosts' attempts are refused
    a = Daemon(root, host="host-a", **env)
    # C dies at its final status of "redone" (its publish unfinished); its long lease keeps it
    # from taking over A's markers in the meantime
    c = Daemon(root, host="host-c", **{**env, "VIDSPOOL_SPOOL__LEASE_SECONDS": "600"})
    b = Daemon(root, host="host-b", **env)
    try:
        a.start()
        drop_json(root / "inbox" / "handed", "orphan", {})
        doc = wait_status(root, "orphan", daemon=a)
        assert doc["state"] == "completed" and doc["host"] == "host-a"
        wait_for(lambda: len(rx.at("/hooks/handed")) >= 2, 20, "A's refused webhook attempts")
        wait_for(lambda: (wait_status(root, "orphan").get("result") or {}).get("delivery_error"), 20, "A's failed copy")
        a.kill()  # with nothing left in active/host-a: it owes only markers. It never comes back.
        c.start(env={"VIDSPOOL_TEST_CRASH_AT": "publish.status_written"})
        drop_json(root / "inbox" / "handed", "redone", {})
        assert c.proc.wait(30) == -signal.SIGKILL  # nor does C
        assert wait_status(root, "redone")["state"] == "completed"
        assert os.listdir(root / "active" / "host-a") == [] and os.listdir(root / "active" / "host-c") != []
        assert len(owed(root, "host-a")) == 2 and len(owed(root, "host-c")) == 2  # a webhook and a delivery marker each
        tried = {job_id: [r["headers"]["webhook-id"] for r in rx.at("/hooks/handed") if r["body"]["data"]["id"] == job_id]
                 for job_id in ("orphan", "redone")}

        rx.answer("/hooks/handed", 200)
        b.start()
        for job_id in ("orphan", "redone"):
            wait_journal(root, job_id, "delivered", b, timeout=30)
        # B has no done/ yet: it leaves the delivery markers for a host that has the folder, and
        # finishing C's publish of "redone" starts no delivery of its own (C's marker owes it)
        wait_for(lambda: len([e for e in b.log_events() if e["event"] == "delivery.not_taken_over"]) == 2, 10,
                 "both deliveries left")
        wait_for(lambda: "job.completed" in (root / "outbox" / "redone" / "log.jsonl").read_text(), 10, "C's publish finished")
        holds(lambda: not (wait_status(root, "redone").get("result") or {}).get("delivery_error"), 1.0, "no copy tried by B")
        assert len(owed(root, "host-a")) == 1 and len(owed(root, "host-c")) == 1 and owed(root, "host-b") == []
        done.mkdir()  # now B has it: it takes both over
        for job_id in ("orphan", "redone"):
            wait_for(lambda: (wait_status(root, job_id).get("result") or {}).get("delivered"), 20, f"{job_id} copied")
        holds(lambda: len(rx.at("/hooks/handed")) == sum(map(len, tried.values())) + 2, 1.0, "nothing sent twice")
        for job_id in ("orphan", "redone"):
            got = [r for r in rx.at("/hooks/handed") if r["body"]["data"]["id"] == job_id]
            assert all(r["verified"] for r in got) and got[-1]["body"]["type"] == "job.completed"
            ids = {r["headers"]["webhook-id"] for r in got}
            assert len(ids) == 1 and set(tried[job_id]) <= ids  # one event, whoever tried it
            assert [j["result"] for j in journal(root, job_id)].count("delivered") == 1
        assert sorted(os.listdir(done)) == ["orphan.txt", "redone.txt"]  # each copied once, no "-2"
        for job_id in ("orphan", "redone"):
            assert (done / f"{job_id}.txt").read_bytes() == (root / "outbox" / job_id / "probe.txt").read_bytes()
        # B finished C's publish of "redone": one job.completed in its log, no job left anywhere
        events = [json.loads(line)["event"] for line in (root / "outbox" / "redone" / "log.jsonl").read_text().splitlines()]
        assert events.count("job.completed") == 1 and leftovers(root) == []
        wait_for(lambda: not owed(root, "host-a") + owed(root, "host-b") + owed(root, "host-c"), 10, "every marker done")
        taken = [(e["event"], e.get("dead_host")) for e in b.log_events() if e["event"].endswith(".taken_over")]
        assert sorted(taken) == sorted((f"{what}.taken_over", host) for what in ("webhook", "delivery")
                                       for host in ("host-a", "host-c")), taken
    finally:
        for d in (a, c, b):
            d.stop()
        rx.close()


@pytest.fixture(scope="module")
def lone(tmp_path_factory):
    """One daemon that keeps retrying, and its receiver."""
    rx = Receiver()
    d = Daemon(tmp_path_factory.mktemp("lone") / "spool", **webhook_env(rx, VIDSPOOL_WEBHOOKS__MAX_ATTEMPTS="100")).start()
    yield d, rx
    d.stop()
    rx.close()


def test_a_host_that_was_only_stalled_stops_sending_what_another_host_took_from_it(lone, tmp_path):
    # A host judged dead may have been stalled (a hung mount, SIGSTOP) with its sender running:
    # once its marker is taken (here: moved out, as a taker's rename does) it sends it no more.
    d, rx = lone
    url = rx.answer("/hooks/stalled", 503)
    drop_json(d.root / "inbox", "stalled", {"kind": "probe", "webhook": {"url": url}})
    wait_for(lambda: len(rx.at("/hooks/stalled")) >= 2, 20, "two refused attempts")
    [marker] = os.listdir(d.root / "webhooks" / d.host)
    os.rename(d.root / "webhooks" / d.host / marker, tmp_path / marker)
    rx.answer("/hooks/stalled", 200)
    tried = len(rx.at("/hooks/stalled"))
    wait_for(lambda: any(e["event"] == "webhook.taken_over" and e.get("job_id") == "stalled" for e in d.log_events()),
             10, "the sender lets it go")
    holds(lambda: len(rx.at("/hooks/stalled")) <= tried + 1, 2.0, "no more attempts (one may have been in flight)")
    assert os.listdir(d.root / "webhooks" / d.host) == []  # and no retry wrote it back


def plant_marker(folder: Path, secret: str, job_id: str, url: str) -> str:
    """A dead host's pending event, sealed with `secret`, as its daemon would have written it."""
    wid = "msg_" + hashlib.sha256(job_id.encode()).hexdigest()[:32]
    body = json.dumps({"type": "job.completed", "timestamp": "2030-01-01T00:00:00Z", "data": {"id": job_id}})
    marker = {"webhook_id": wid, "job_id": job_id, "event": "completed", "url": url, "source": "job",
              "timestamp": "2030-01-01T00:00:00Z", "body": body, "attempts": 3}
    (folder / f"{wid}.json").write_text(json.dumps({**marker, "mac": marker_mac(secret, marker)}))
    return wid


def test_a_dead_hosts_marker_sealed_with_another_secret_is_left_where_it_is(lone):
    # host-z never beat (no hosts/host-z.json): dead once a lease has passed, owing two events
    d, rx = lone
    url = rx.answer("/hooks/foreign", 200)
    folder = d.root / "webhooks" / "host-z"
    folder.mkdir()
    for job_id in ("sealed-here", "sealed-elsewhere"):
        (d.root / "outbox" / job_id).mkdir()
    plant_marker(folder, SECRET, "sealed-here", url)
    other = plant_marker(folder, "whsec_" + base64.b64encode(b"another host's key, 32 bytes lo").decode(),
                         "sealed-elsewhere", url)
    wait_for(lambda: rx.at("/hooks/foreign"), 20, "the event sealed with our secret")
    holds(lambda: len(rx.at("/hooks/foreign")) == 1, 1.0, "only that one")
    [got] = rx.at("/hooks/foreign")
    assert got["verified"] and got["body"]["data"]["id"] == "sealed-here"
    assert os.listdir(folder) == [f"{other}.json"]  # neither sent nor removed: its host's secret may come back
    refused = [e for e in d.log_events() if e["event"] == "webhook.not_taken_over"]
    assert len(refused) == 1 and refused[0]["dead_host"] == "host-z" and "same one" in refused[0]["reason"]
    folder.joinpath(f"{other}.json").unlink()  # the module's daemon owes nothing more
