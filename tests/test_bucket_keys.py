"""The bucket spool's key layout and its lease arithmetic: pure functions, no server."""

from __future__ import annotations

import pytest

from daemon.bucket import keys, lease


def test_queue_hints_list_by_priority_then_age_and_parse_back():
    made = [keys.queue_key(keys.rank_of(p), usec, job, epoch)
            for p, usec, job, epoch in [(0, 20, "b.mp4-2", 3), (5, 30, "urgent", 0), (0, 10, "a", 0), (-100, 1, "late", 7)]]
    hints = [keys.parse_queue_hint(k) for k in sorted(made)]
    assert [(h.job_id, h.epoch) for h in hints] == [("urgent", 0), ("a", 0), ("b.mp4-2", 3), ("late", 7)]
    assert hints == sorted(hints)
    assert all(h.key in made for h in hints)
    assert hints[2].at_epoch(4).key == "queue/100-0000000000000020-b.mp4-2.4"


@pytest.mark.parametrize("key", ["queue/100-0000000000000020-a", "queue/1-0000000000000020-a.0", "inbox/100-0000000000000020-a.0",
                                 "queue/100-0000000000000020-.hidden.0", "queue/100-0000000000000020-a.x"])
def test_keys_that_are_not_queue_hints_are_none(key):
    assert keys.parse_queue_hint(key) is None


def test_host_keys_round_trip_and_refuse_what_is_not_one_segment():
    assert keys.parse_intent(keys.intent_key("gpu-7", "fox.mp4", 3)) == ("gpu-7", "fox.mp4", 3)
    assert keys.parse_intent("active/gpu-7/fox.1/x") is None and keys.parse_intent("active/gpu-7/fox") is None
    assert keys.drop_of_intake(keys.intake_key("inbox/a%2F/job.json")) == "inbox/a%2F/job.json"
    assert "/" not in keys.intake_key("inbox/a/b/job.json").removeprefix("intake/")
    assert keys.parse_work_key(keys.work_key("fox", 3, "out.txt")) == ("fox", 3)
    assert keys.host_of_heartbeat(keys.heartbeat_key("gpu-7")) == "gpu-7"
    for bad in ("a/b", ".h", ""):
        with pytest.raises(ValueError):
            keys.intent_key(bad, "fox", 1)
    with pytest.raises(ValueError):
        keys.status_key("../x")


def test_every_write_is_unique_and_epochs_grow_at_each_change_of_owner_or_state():
    queued = lease.accepted("fox", {"kind": "echo", "max_attempts": 2}, token="t1")
    assert (queued["state"], queued["lease"]["epoch"], queued["lease"]["seq"]) == ("queued", 0, 0)
    running = lease.claimed(queued, "h1")
    assert queued["state"] == "queued"  # the input is left as it was
    assert (running["state"], running["host"], running["attempt"], running["lease"]["epoch"]) == ("running", "h1", 1, 1)
    moved = lease.progressed(running, progress=50)
    assert moved["lease"]["epoch"] == 1 and moved["lease"]["seq"] == running["lease"]["seq"] + 1
    final = lease.final_state("completed", result={"files": []})
    done = lease.published(lease.committed(moved, final))
    assert (done["state"], done["progress"], done["lease"]["final"], done["lease"]["epoch"]) == ("completed", 100, None, 2)
    assert lease.encode(lease.requeued(running)) != lease.encode(lease.requeued(lease.progressed(running)))
    again = lease.claimed(lease.requeued(running), "h2")
    assert (again["attempt"], lease.attempts_left(again)) == (2, False)
    assert lease.decode(lease.encode(again)) == again
    assert lease.canceled_queued(queued)["state"] == "canceled"
    assert lease.cancel_marked(running)["lease"]["cancel"] is True
