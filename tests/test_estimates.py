"""Time estimates through a real daemon on the tiny Wan model (CPU): a job is estimated by
its work (pixels × frames × steps, decode and encode by pixels × frames) from this host's
past runs, a running job's remaining time covers the stages still to come (never 0 while it
runs), and a model's load time comes from its past loads once it is no longer held.

Timings on a shared 2-core machine vary: the checks are ratios with generous bounds."""

from __future__ import annotations

import json
import statistics
import time
import urllib.request

import pytest

from contract.status import epoch
from tests.support import Daemon, drop_json, status, wait_for, wait_status

SMALL = {"width": 128, "height": 128, "num_frames": 17, "num_inference_steps": 4}
BIG = {**SMALL, "width": 256, "height": 256}  # four times the pixels
HELD = {**BIG, "num_frames": 9}  # long enough decoding and encoding to tell from the 1 s floor
GATED = "vidspool_testkinds.gated:GatedWanPipeline"


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def post(url: str) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def est(tiny_models, tmp_path_factory):
    """One CPU worker; `w`, `w2`, `w3` and `fresh` are the tiny Wan model, `gated` the same
    weights in a pipeline the test can hold (tests/plugins/vidspool_testkinds/gated.py)."""
    base = tmp_path_factory.mktemp("estimates")
    wan = str(tiny_models / "wan-t2v")
    models = {name: {"path": wan, "kinds": ["text-to-video"]} for name in ("w", "w2", "w3", "fresh")}
    models["gated"] = {"path": wan, "kinds": ["text-to-video"], "pipeline": GATED}
    d = Daemon(base / "spool", workers=["cpu"], VIDSPOOL_MODELS=json.dumps(models),
               VIDSPOOL_COMPAT__VISUALIZR__LISTEN="127.0.0.1:0")
    d.gates = base / "gates"
    d.gates.mkdir()
    d.start(env={"TEST_PIPELINE_GATES": str(d.gates)})
    yield d
    d.stop()


def run_job(d: Daemon, job_id: str, params: dict, model: str = "w") -> dict:
    drop_json(d.root / "inbox", job_id, {"kind": "text-to-video", "model": model, "params": {"prompt": "a fox", **params}})
    doc = wait_status(d.root, job_id, timeout=180, daemon=d)
    assert doc["state"] == "completed", (doc.get("error"), d.log())
    return doc


def run_seconds(doc: dict) -> float:
    return epoch(doc["finished_at"]) - epoch(doc["started_at"])


def test_a_job_is_estimated_by_its_work(est):
    # Load on a shared machine (other test files run beside this one) can change between the
    # past runs and the job: a fresh model (its own history) is tried again when the estimate
    # was under three times the past runs or not within a factor of two of what the job took.
    tries = []
    for model in ("w", "w2", "w3"):
        run_job(est, f"{model}-warm", SMALL, model)  # its load: not a run of this size to scale from
        small = [run_seconds(run_job(est, f"{model}-small-{i}", SMALL, model)) for i in range(3)]
        # Paused, the job at four times the pixels waits in the queue with its estimate.
        (est.root / "PAUSE").write_text("")
        wait_for(lambda: get(est.api + "/api/v1/health").get("paused"), 10, "paused")
        drop_json(est.root / "inbox", f"{model}-big", {"kind": "text-to-video", "model": model,
                                                       "params": {"prompt": "a fox", **BIG}})
        wait_for(lambda: (status(est.root, f"{model}-big") or {}).get("state") == "queued", 30, "big is queued")
        estimate = get(est.api + f"/api/v1/jobs/{model}-big")["estimated_time_seconds"]
        (est.root / "PAUSE").unlink()
        took = run_seconds(wait_status(est.root, f"{model}-big", timeout=180, daemon=est))
        tries.append({"small": small, "estimate": estimate, "took": took})
        if estimate >= 3 * statistics.median(small) and took / 2 <= estimate <= took * 2:
            return
    raise AssertionError(f"not three times the past runs, or not within a factor of two of what the job took: {tries}")


def test_a_running_job_counts_the_stages_still_to_come(est):
    past = [run_job(est, f"gated-{i}", HELD, model="gated") for i in range(2)]  # no gate: a plain run
    # What decoding and encoding took at this size (the least of the runs).
    after = min(doc["result"]["seconds"]["decode"] + doc["result"]["seconds"]["encode"] for doc in past)
    longest = max(run_seconds(doc) for doc in past)
    assert after > 1.5, past  # more than the floor of a running job's estimate (1 s), or this proves nothing
    step, decode = est.gates / "step-1", est.gates / "decode"
    step.touch()
    decode.touch()
    try:
        drop_json(est.root / "inbox", "held", {"kind": "text-to-video", "model": "gated", "params": {"prompt": "a fox", **HELD}})
        wait_for(lambda: (est.gates / "step-1.reached").exists(), 60, "held at its first step")
        # Held at step 0 for longer than a whole past run: a run less its time is long gone.
        started = epoch(status(est.root, "held")["started_at"])
        time.sleep(max(0.0, started + longest + 0.5 - time.time()))
        doc = get(est.api + "/api/v1/jobs/held")
        assert (doc["stage"], doc["step"]) == ("denoising", 0), doc
        assert doc["estimated_remaining_seconds"] >= after, doc
        assert doc["eta_seconds"] >= after, doc  # the status's own, which the page shows

        step.unlink()
        wait_for(lambda: (est.gates / "decode.reached").exists(), 60, "held before decoding")
        wait_for(lambda: status(est.root, "held")["stage"] == "decoding", 10, "the status says decoding")
        doc = get(est.api + "/api/v1/jobs/held")
        # Decoding has no steps to measure: its past runs say how long it and encoding take.
        assert doc["eta_seconds"] >= 0.9 * after, doc
        assert doc["estimated_remaining_seconds"] > 0, doc
    finally:
        step.unlink(missing_ok=True)
        decode.unlink(missing_ok=True)
    assert wait_status(est.root, "held", timeout=180, daemon=est)["state"] == "completed"


def test_a_load_estimate_comes_from_past_loads(est):
    visualizr = est.heartbeat["compat_urls"]["visualizr"]
    loaded = run_job(est, "loads-fresh", SMALL, model="fresh")["result"]["model"]
    assert loaded["loaded"] is True, loaded
    post(est.api + "/api/v1/models/fresh/unload")
    wait_for(lambda: "fresh" not in get(est.api + "/api/v1/queue")["devices"][0]["models"], 30, "fresh unloaded")
    # No worker holds it now: the estimate is this host's past load of it.
    requirements = get(visualizr + "/api/v1/models/fresh")["requirements"]
    assert requirements["estimated_load_time_seconds"] == pytest.approx(loaded["load_seconds"], abs=0.01), requirements
    answer = post(visualizr + "/api/v1/models/fresh/load")
    assert answer["estimated_load_time_seconds"] == pytest.approx(loaded["load_seconds"], abs=0.01), answer
