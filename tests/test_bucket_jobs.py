"""The bucket spool's job protocol, step by step, against real S3 servers (SeaweedFS and
moto, each test on both): accept, claim, progress, commit, publish, requeue, cancel, the
recovery of one's own host and the takeover of a dead one, the fencing of a host that lost
its job, and the requests one job costs (docs/bucket-spool.md)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest

from daemon.bucket import keys, lease
from daemon.bucket.accept import accept_drop, find_drops, stage_drop
from daemon.bucket.claim import claim_hint, claim_next, list_queue
from daemon.bucket.counting import CountingStore
from daemon.bucket.errors import Unavailable
from daemon.bucket.finish import CancelAsked, LeaseLost, cancel_job, commit, publish, result_file, write_progress
from daemon.bucket.recover import HostWatch, clear_old_attempts, recover_own, take_over
from daemon.bucket.runner import check_job
from daemon.bucket.status_io import read_status, swap_status
from daemon.bucket.store import BucketStore
from tests.s3servers import CREDENTIALS
from tests.test_bucket_store import RACERS, race

MEDIA = b"a frame of fox video"


def drop_job(store, name: str = "fox", **job) -> None:
    """A user's drop: the input first, the job file last (SPEC §12)."""
    store.put(f"inbox/{name}.txt", MEDIA)
    store.put(f"inbox/{name}.json", json.dumps({"kind": "checksum", "inputs": {"clip": f"{name}.txt"}, **job}).encode())


def accept_all(store, host: str = "h1") -> list[str]:
    drops, _ = find_drops(store)
    return [accept_drop(store, d, host, check_job) for d in drops]


def keys_under(store, folder: str) -> list[str]:
    return [e.key for e in store.list(folder)]


def run_attempt(store, held, host: str = "h1"):
    """What a worker does: progress, one result uploaded into the attempt's work/ folder."""
    held = write_progress(store, held, host, progress=50, stage="running")
    body = b"digest of " + MEDIA
    store.put(keys.work_key(held.job_id, held.lease["epoch"], "digest.txt"), body)
    files = [result_file(held.job_id, "digest.txt", len(body), hashlib.sha256(body).hexdigest(), "text/plain")]
    return held, lease.final_state("completed", result={"files": files})


# ----------------------------------------------------------------------------- one job, every step

def test_a_drop_goes_accept_claim_run_commit_publish_and_costs_at_most_25_requests(s3_bucket):
    plain = s3_bucket.store()
    drop_job(plain)
    store = CountingStore(plain)

    assert accept_all(store) == ["fox"]
    queued = read_status(plain, "fox")
    assert (queued.status["state"], queued.lease["epoch"], queued.status["drop"]) == ("queued", 0, "inbox/fox.json")
    assert plain.get("outbox/fox/input/fox.txt")[0] == MEDIA
    assert keys_under(plain, "inbox") == [] and keys_under(plain, "intake") == []
    assert [h.job_id for h in list_queue(plain)] == ["fox"]

    held = claim_next(store, "h1")
    assert (held.status["state"], held.status["host"], held.status["attempt"], held.lease["epoch"]) == ("running", "h1", 1, 1)
    assert list_queue(plain) == [] and keys_under(plain, "active") == ["active/h1/fox.1"]

    held, final = run_attempt(store, held)
    held = commit(store, held, "h1", final)
    assert (held.status["state"], held.lease["final"]["state"]) == ("running", "completed")
    end = publish(store, held, finisher="h1")

    again = read_status(plain, "fox")
    assert again.status == end.status and again.status["state"] == "completed" and again.lease["final"] is None
    assert again.status["result"]["files"][0]["name"] == "digest.txt"
    assert plain.get("outbox/fox/digest.txt")[0] == b"digest of " + MEDIA
    assert keys_under(plain, "work") == [] and keys_under(plain, "active") == [] and keys_under(plain, "queue") == []
    # The worker's own transfer (its result's PUT here) is the media's, not the protocol's.
    protocol = store.total - store.counts["put"] + 2  # the hint and the intent are PUTs too
    print(f"requests for one job, accept → publish: {dict(store.counts)} (protocol: {protocol})")
    assert protocol <= 25, store.counts


def test_an_invalid_job_fails_at_accept_with_its_files_kept(s3_bucket):
    store = s3_bucket.store()
    drop_job(store, "bad", kind="no-such-kind")
    store.put("inbox/junk.json", b"{not json")
    assert accept_all(store) == ["bad", "junk"]
    bad, junk = read_status(store, "bad").status, read_status(store, "junk").status
    assert (bad["state"], bad["error"]["code"], junk["state"], junk["error"]["code"]) == (
        "failed", "invalid_job", "failed", "invalid_job")
    assert store.get("outbox/bad/input/bad.txt")[0] == MEDIA
    assert list_queue(store) == [] and keys_under(store, "inbox") == []


def test_a_drop_waits_for_its_inputs_and_colliding_ids_get_a_suffix(s3_bucket):
    store = s3_bucket.store()
    store.put("inbox/fox.json", json.dumps({"kind": "checksum", "inputs": {"clip": "fox.txt"}}).encode())
    assert find_drops(store)[0] == []  # its input is not uploaded yet
    store.put("inbox/fox.txt", MEDIA)
    assert accept_all(store) == ["fox"]
    drop_job(store, "other", id="fox")
    assert accept_all(store) == ["fox-2"]
    assert read_status(store, "fox-2").status["drop"] == "inbox/other.json"


def test_a_second_host_walks_away_from_a_drop_being_accepted(s3_bucket):
    store = s3_bucket.store()
    drop_job(store)
    (drop,), _ = find_drops(store)
    assert stage_drop(store, drop, "h1") is not None
    assert accept_drop(store, drop, "h2", check_job) is None
    recover_own(store, "h1", check_job)  # h1 finishes what it staged
    assert read_status(store, "fox").status["state"] == "queued" and keys_under(store, "intake") == []


# ----------------------------------------------------------------------------- races and fencing

def test_hosts_racing_for_one_job_have_exactly_one_winner(s3_bucket, s3_server):
    store = s3_bucket.store(request_timeout_seconds=30)
    drop_job(store)
    accept_all(store)
    (hint,) = list_queue(store)
    def attempt(i: int):
        try:
            return claim_hint(store, hint, f"h{i}")
        except Unavailable:  # moto answers some racing requests 500: that host tries again next turn
            return "unavailable"

    won = race(RACERS[s3_server.name], attempt)
    winners = [h for h in won if h not in (None, "unavailable")]
    assert len(winners) == 1, won
    status = read_status(store, "fox").status
    assert (status["host"], status["attempt"]) == (winners[0].status["host"], 1)
    # Every loser removed its intent, but one whose request went unanswered (its host's
    # sweep removes it later: docs/bucket-spool.md, "Late writes").
    unanswered = {f"active/h{i}/fox.1" for i, h in enumerate(won) if h == "unavailable"}
    left = set(keys_under(store, "active")) - unanswered
    assert left == {f"active/{status['host']}/fox.1"} and list_queue(store) == [], (left, won)


def test_a_host_that_lost_its_job_can_write_nothing_more_for_it(s3_bucket):
    store = s3_bucket.store()
    drop_job(store)
    accept_all(store)
    stale = write_progress(store, claim_next(store, "h1"), "h1", progress=5)
    # h1 stops beating; h2 takes its job over: requeued, then claimed and run by h2.
    assert take_over(store, "h1", "h2", check_job) == 1
    assert read_status(store, "fox").status["state"] == "queued"
    with pytest.raises(LeaseLost):
        write_progress(store, stale, "h1", progress=60)
    mine = claim_next(store, "h2")
    assert mine.status["attempt"] == 2
    stale_result, stale_final = stale, lease.final_state("completed", result={"files": []})
    with pytest.raises(LeaseLost):
        commit(store, stale_result, "h1", stale_final)
    held, final = run_attempt(store, mine, "h2")
    end = publish(store, commit(store, held, "h2", final), finisher="h2")
    assert end.status["state"] == "completed" and end.status["host"] == "h2"
    with pytest.raises(LeaseLost):
        write_progress(store, stale, "h1", progress=99)
    assert read_status(store, "fox").status == end.status


def test_a_committed_job_is_published_once_whoever_finishes_it(s3_bucket):
    store = s3_bucket.store()
    drop_job(store)
    accept_all(store)
    held, final = run_attempt(store, claim_next(store, "h1"))
    committed = commit(store, held, "h1", final)
    assert take_over(store, "h1", "h2", check_job) == 1  # h2 finishes h1's publish
    end = read_status(store, "fox")
    assert end.status["state"] == "completed" and store.get("outbox/fox/digest.txt")[0] == b"digest of " + MEDIA
    late = publish(store, committed, finisher="h1")  # h1 was alive after all: it changes nothing
    assert late.status == end.status and read_status(store, "fox").etag == end.etag
    assert keys_under(store, "work") == [] and keys_under(store, "active") == []


def test_a_takers_hint_left_by_a_lost_requeue_is_removed_by_its_next_reader(s3_bucket):
    store = s3_bucket.store()
    drop_job(store)
    accept_all(store)
    held, final = run_attempt(store, claim_next(store, "h1"))
    # h2 thinks h1 dead: it writes the requeue's hint (epoch 2) first; h1, only slow, ends
    # the job (epoch 2 too) before h2's requeue swap, which then fails.
    store.put(keys.queue_key(*map(int, held.lease["place"].split("-")), "fox", held.lease["epoch"] + 1), b"")
    end = publish(store, commit(store, held, "h1", final), finisher="h1")
    assert end.lease["epoch"] == held.lease["epoch"] + 1 and len(list_queue(store)) == 1
    assert claim_next(store, "h3") is None
    assert list_queue(store) == [] and keys_under(store, "active") == []
    assert read_status(store, "fox").status == end.status


# ----------------------------------------------------------------------------- cancel, recovery

def test_cancel_ends_a_queued_job_and_stops_a_running_one_at_its_next_write(s3_bucket):
    store = s3_bucket.store()
    drop_job(store, "a")
    drop_job(store, "b")
    accept_all(store)
    assert cancel_job(store, "a") == "canceled"
    assert read_status(store, "a").status["state"] == "canceled" and [h.job_id for h in list_queue(store)] == ["b"]
    held = claim_next(store, "h1")
    assert cancel_job(store, "b") == "asked"
    with pytest.raises(CancelAsked) as asked:
        write_progress(store, held, "h1", progress=50)
    end = publish(store, commit(store, asked.value.now, "h1", lease.final_state("canceled")))
    assert end.status["state"] == "canceled" and cancel_job(store, "b") == "ended"
    assert cancel_job(store, "nobody") == "unknown"


def test_recovery_requeues_its_own_cut_attempt_until_the_attempts_run_out(s3_bucket):
    store = s3_bucket.store()
    drop_job(store, max_attempts=2)
    accept_all(store)
    for attempt in (1, 2):
        held = claim_next(store, "h1")
        store.put(keys.work_key("fox", held.lease["epoch"], "digest.txt"), b"half")
        assert held.status["attempt"] == attempt
        recover_own(store, "h1", check_job)  # the host restarted: its attempt was cut short
    status = read_status(store, "fox").status
    assert (status["state"], status["error"]["code"], status["attempt"]) == ("failed", "worker_crashed", 2)
    assert keys_under(store, "work") == [] and keys_under(store, "active") == [] and list_queue(store) == []


def test_attempt_results_left_behind_are_swept_and_a_running_attempts_kept(s3_bucket):
    store = s3_bucket.store()
    drop_job(store)
    accept_all(store)
    held = claim_next(store, "h1")
    running = keys.work_key("fox", held.lease["epoch"], "digest.txt")
    store.put(running, b"this attempt's")
    store.put(keys.work_key("fox", held.lease["epoch"] - 1, "digest.txt"), b"a fenced attempt's, landed late")
    store.put(keys.work_key("gone", 3, "digest.txt"), b"a job removed since")
    clear_old_attempts(store, timedelta(hours=1))
    assert len(keys_under(store, "work")) == 3  # nothing that old
    clear_old_attempts(store, timedelta(0))
    assert keys_under(store, "work") == [running]


def test_a_host_is_dead_when_its_heartbeat_stands_still_for_the_lease(s3_bucket):
    store = s3_bucket.store()
    now = [0.0]
    alive, watcher = HostWatch("h1", 5, clock=lambda: now[0]), HostWatch("h2", 5, clock=lambda: now[0])
    alive.beat(store)
    assert watcher.dead_hosts(store) == {}
    now[0] = 4.0
    alive.beat(store)
    assert watcher.dead_hosts(store) == {}
    now[0] = 8.9
    assert watcher.dead_hosts(store) == {}
    now[0] = 9.0
    (etag,) = watcher.dead_hosts(store).values()
    watcher.bury(store, "h1", etag)
    assert keys_under(store, "hosts") == []


class LostAnswers(BucketStore):
    """A store whose next conditional writes reach the server but whose answers are lost
    on the way back (a cut connection after the server applied the write)."""

    lose = 0

    def replace(self, *args, **kwargs):
        etag = super().replace(*args, **kwargs)
        if self.lose:
            self.lose -= 1
            raise Unavailable("replace", args[0], "connection cut after the request was sent")
        return etag


def test_a_write_whose_answer_was_lost_is_read_back_before_deciding(s3_bucket):
    store = LostAnswers(s3_bucket.location, s3_bucket.config(), CREDENTIALS)
    drop_job(store)
    accept_all(store)
    store.lose = 1
    held = claim_next(store, "h1")  # the claim landed; its answer did not
    assert held is not None and held.status["host"] == "h1"
    assert read_status(store, "fox").etag == held.etag
    store.lose = 1
    assert swap_status(store, held, lease.progressed(held.status, progress=1)) is not None
