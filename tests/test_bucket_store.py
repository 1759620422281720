"""The bucket spool's S3 primitives, its safety probe and its configuration, against real
servers started here: SeaweedFS and moto (each test runs on both), and a loopback proxy
that strips conditional headers, stalls, cuts connections or answers with an error."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from daemon.bucket.errors import NotFound, PreconditionFailed, Refused, TooLarge, Unavailable
from daemon.bucket.location import BucketLocation, parse_bucket_url
from daemon.bucket.probe import probe_bucket
from daemon.bucket.store import MIB, BucketStore
from daemon.config import ConfigError, S3Config, load_settings
from tests.s3servers import CREDENTIALS, FaultProxy, S3Bucket, free_port
from tests.support import base_env

# Measured (tests/s3servers.py): moto 5.2 copies whatever x-amz-copy-source-if-match says.
HONOURS_COPY_IF_MATCH = {"seaweedfs": True, "moto": False}
# SeaweedFS answers the losers of a race for one key about a second apart (its key lock).
RACERS = {"seaweedfs": 4, "moto": 12}


def raw_client(bucket: S3Bucket):
    """A botocore client that writes keys exactly as given (as another S3 client would)."""
    return bucket.store()._session.create_client(
        "s3", region_name="us-east-1", endpoint_url=bucket.server.endpoint)


def race(n: int, attempt) -> list:
    """Runs attempt(i) in n threads released at once; the results, in thread order."""
    gate, results = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = attempt(i)
        except Exception as exc:  # noqa: BLE001 - raised below, in the test's thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)  # a loaded machine answers slowly; a racer still running is a failure below
    assert not any(t.is_alive() for t in threads), "a racer did not finish in 300 s"
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def timed(fn, *args):
    """(seconds, result or the exception raised) of one call."""
    started = time.monotonic()
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the test asserts on it
        result = exc
    return time.monotonic() - started, result


# ----------------------------------------------------------------------------- writes

def test_create_is_exclusive_and_replace_swaps_only_from_the_current_etag(s3_bucket):
    store = s3_bucket.store()
    first = store.create("outbox/j1/status.json", b'{"v": 1}', "application/json")
    assert first is not None
    assert store.create("outbox/j1/status.json", b'{"v": 2}') is None
    assert store.get("outbox/j1/status.json") == (b'{"v": 1}', first)

    assert store.replace("outbox/j1/status.json", b'{"v": 3}', '"' + "0" * 32 + '"') is None
    second = store.replace("outbox/j1/status.json", b'{"v": 3}', first)
    assert second not in (None, first)
    assert store.replace("outbox/j1/status.json", b'{"v": 4}', first) is None  # a stale ETag: fenced
    assert store.get("outbox/j1/status.json") == (b'{"v": 3}', second)
    assert store.replace("outbox/gone/status.json", b"{}", second) is None

    third = store.put("outbox/j1/status.json", b'{"v": 5}')
    assert store.get("outbox/j1/status.json") == (b'{"v": 5}', third)


def test_concurrent_creates_of_one_key_have_one_winner(s3_bucket, s3_server):
    store = s3_bucket.store(request_timeout_seconds=30)
    n = RACERS[s3_server.name]
    etags = race(n, lambda i: store.create("queue/claim", f"host{i}".encode()))
    winners = [i for i, etag in enumerate(etags) if etag is not None]
    assert len(winners) == 1, etags
    assert store.get("queue/claim") == (f"host{winners[0]}".encode(), etags[winners[0]])


def test_concurrent_swaps_from_one_etag_have_one_winner(s3_bucket, s3_server):
    store = s3_bucket.store(request_timeout_seconds=30)
    base = store.put("outbox/j1/status.json", b"queued")
    n = RACERS[s3_server.name]
    etags = race(n, lambda i: store.replace("outbox/j1/status.json", f"running on host{i}".encode(), base))
    winners = [i for i, etag in enumerate(etags) if etag is not None]
    assert len(winners) == 1, etags
    assert store.get("outbox/j1/status.json") == (f"running on host{winners[0]}".encode(), etags[winners[0]])


# ----------------------------------------------------------------------------- reads

def test_reads_name_the_version_and_the_limit(s3_bucket):
    store = s3_bucket.store()
    etag = store.put("inbox/job.json", b"0123456789")
    assert store.get("inbox/job.json", etag=etag) == (b"0123456789", etag)
    with pytest.raises(PreconditionFailed, match="inbox/job.json"):
        store.get("inbox/job.json", etag='"' + "1" * 32 + '"')
    with pytest.raises(TooLarge, match="10 bytes"):
        store.get("inbox/job.json", max_bytes=9)
    assert store.get_range("inbox/job.json", 2, 5) == b"234"
    entry = store.head("inbox/job.json")
    assert (entry.key, entry.size, entry.etag) == ("inbox/job.json", 10, etag)
    assert store.get("inbox/none.json") is None and store.head("inbox/none.json") is None
    with pytest.raises(NotFound, match="inbox/none.json"):
        store.get_range("inbox/none.json", 0, 1)


def test_listings_are_relative_to_the_prefix_and_stay_inside_it(s3_bucket):
    store = s3_bucket.store()
    neighbour = S3Bucket(s3_bucket.server, s3_bucket.name, prefix="spool2").store()
    neighbour.put("inbox/theirs.json", b"x")  # shares the bucket and the first letters
    etags = {k: store.put(k, k.encode()) for k in ("inbox/a.json", "inbox/a.mp4", "inbox/faces/b.png", "queue/000-1-a.0")}

    listed = list(store.list())
    assert [e.key for e in listed] == sorted(etags)
    assert {e.key: (e.size, e.etag) for e in listed} == {k: (len(k), v) for k, v in etags.items()}
    assert [e.key for e in store.list("inbox")] == ["inbox/a.json", "inbox/a.mp4", "inbox/faces/b.png"]
    assert list(store.list("inbox/faces/b.png/x")) == []

    level = store.list_dirs("inbox")
    assert level.dirs == ["inbox/faces"]
    assert [e.key for e in level.objects] == ["inbox/a.json", "inbox/a.mp4"]
    assert store.list_dirs().dirs == ["inbox", "queue"]


def test_a_key_obstore_cannot_name_does_not_blind_the_listing(s3_bucket, s3_server):
    """Anyone who can write inbox/ can write `inbox/a//b`; obstore fails a whole listing on it."""
    store = s3_bucket.store()
    store.put("inbox/good.json", b"{}")
    raw = raw_client(s3_bucket)
    for key in ("spool/inbox/a//b.json", "spool/inbox/../up.json", "spool/inbox/c\x01d.json"):
        try:
            raw.put_object(Bucket=s3_bucket.name, Key=key, Body=b"hostile")
        except raw.exceptions.ClientError:
            pass  # SeaweedFS refuses '..' outright
    listed = [e.key for e in store.list("inbox")]
    assert "inbox/good.json" in listed
    dirs = store.list_dirs("inbox")
    assert "inbox/good.json" in [e.key for e in dirs.objects]
    if s3_server.name == "moto":  # moto keeps keys exactly; SeaweedFS folds a//b into a/b
        assert {"inbox/a//b.json", "inbox/../up.json", "inbox/c\x01d.json"} <= set(listed)
        with pytest.raises(ValueError, match="segment"):
            store.get("inbox/a//b.json")


# ----------------------------------------------------------------------------- deletes, copies

def test_deletes_bulk_and_conditional(s3_bucket):
    store = s3_bucket.store()
    for k in ("work/j1/0/a", "work/j1/0/b", "inbox/x.json"):
        store.put(k, b"1")
    store.delete(["work/j1/0/a", "work/j1/0/b", "work/j1/0/never-there"])
    assert [e.key for e in store.list()] == ["inbox/x.json"]
    store.delete([])

    old = store.head("inbox/x.json").etag
    new = store.put("inbox/x.json", b"uploaded again")
    assert store.delete_if("inbox/x.json", old) is False
    assert store.get("inbox/x.json") == (b"uploaded again", new)
    assert store.delete_if("inbox/x.json", new) is True
    assert store.head("inbox/x.json") is None
    assert store.delete_if("inbox/x.json", new) is False


def test_copy_is_server_side_and_conditional_where_the_server_honours_it(s3_bucket, s3_server):
    store = s3_bucket.store()
    etag = store.put("inbox/clip.mp4", b"media")
    store.copy("inbox/clip.mp4", "outbox/j1/input/clip.mp4")
    store.copy("inbox/clip.mp4", "outbox/j1/input/again.mp4", if_match=etag)
    assert store.get("outbox/j1/input/clip.mp4") == (b"media", etag)
    assert store.get("outbox/j1/input/again.mp4")[0] == b"media"
    with pytest.raises(NotFound):
        store.copy("inbox/none.mp4", "outbox/j1/input/none.mp4")
    try:
        store.copy("inbox/clip.mp4", "outbox/j1/input/stale.mp4", if_match='"' + "2" * 32 + '"')
        honoured = False
    except PreconditionFailed:
        honoured = True
    assert honoured is HONOURS_COPY_IF_MATCH[s3_server.name]
    copy_check = next(c for c in probe_bucket(store, "h").checks if c.name == "conditional copy")
    assert copy_check.ok is honoured and copy_check.warning


# ----------------------------------------------------------------------------- transfers

def test_large_upload_goes_in_parts_and_downloads_back_identical(s3_bucket, tmp_path):
    store = s3_bucket.store(part_mib=5)
    source = tmp_path / "result.mp4"
    source.write_bytes(os.urandom(11 * MIB))
    etag = store.upload_file("work/j1/0/result.mp4", source, "video/mp4")
    assert etag.strip('"').endswith("-3")  # a multipart object's ETag counts its parts
    small = tmp_path / "small.txt"
    small.write_bytes(b"small")
    assert "-" not in store.upload_file("work/j1/0/small.txt", small).strip('"')

    target = tmp_path / "got" / "result.mp4"
    target.parent.mkdir()
    entry = store.download_file("work/j1/0/result.mp4", target, etag=etag)
    assert (entry.size, entry.etag) == (11 * MIB, etag)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    with pytest.raises(PreconditionFailed):
        store.download_file("work/j1/0/result.mp4", target.with_name("stale.mp4"), etag='"x"')
    with pytest.raises(NotFound):
        store.download_file("work/j1/0/none.mp4", target.with_name("none.mp4"))
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.mp4"]  # no partial files left


def test_presigned_get_needs_no_credentials(s3_bucket):
    store = s3_bucket.store()
    store.put("outbox/j1/video.mp4", b"video bytes")
    url = store.presign_get("outbox/j1/video.mp4", 60)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    assert requests.get(url, timeout=10).content == b"video bytes"
    with pytest.raises(ValueError):
        store.presign_get("outbox/j1/video.mp4", 0)


# ----------------------------------------------------------------------------- the probe

def test_probe_passes_on_a_real_server_and_cleans_up(s3_bucket, s3_server):
    store = s3_bucket.store()
    report = probe_bucket(store, "gpu-1")
    assert report.safe, report.checks
    assert report.refusal() is None
    names = {c.name: c for c in report.checks}
    for name in ("write", "read back", "exclusive create", "compare-and-swap applies", "distinct ETags",
                 "compare-and-swap", "listing", "conditional delete"):
        assert names[name].ok, names[name]
    assert names["conditional copy"].ok is HONOURS_COPY_IF_MATCH[s3_server.name]
    assert {"create", "get", "replace", "list", "copy", "delete_if", "delete"} <= set(report.latency_ms)
    assert list(store.list()) == []


def test_probe_refuses_a_server_that_ignores_conditional_headers(s3_bucket, fault_proxy):
    fault_proxy.strip_conditions = True
    report = probe_bucket(s3_bucket.store(port=fault_proxy.port), "gpu-1")
    assert not report.safe
    assert report.refusal().startswith("exclusive create: the server accepted a second PUT with If-None-Match: *")
    failed = {c.name for c in report.checks if not c.ok}
    assert {"exclusive create", "compare-and-swap"} <= failed
    assert list(s3_bucket.store().list()) == []  # cleaned up all the same


# ----------------------------------------------------------------------------- faults

def test_a_server_that_is_down_is_unavailable_at_once():
    store = S3Bucket(None, "vidspool-none").store(port=free_port(), connect_timeout_seconds=1)
    for request, args in ((store.get, ("inbox/a.json",)), (store.create, ("inbox/a.json", b"{}")),
                          (lambda: list(store.list("inbox")), ()), (store.delete_if, ("inbox/a.json", '"x"'))):
        seconds, result = timed(request, *args)
        assert isinstance(result, Unavailable), result
        assert seconds < 1.5


def test_a_stalled_server_times_out_and_a_cut_connection_fails_at_once(s3_bucket, fault_proxy):
    store = s3_bucket.store(port=fault_proxy.port, request_timeout_seconds=1.5)
    store.put("inbox/a.json", b"{}")
    fault_proxy.stall()
    seconds, result = timed(store.get, "inbox/a.json")
    assert isinstance(result, Unavailable) and "inbox/a.json" in str(result), result
    assert 1.4 < seconds < 3

    threading.Timer(0.3, fault_proxy.cut).start()
    seconds, result = timed(store.create, "inbox/b.json", b"{}")
    assert isinstance(result, Unavailable), result
    assert seconds < 1.2

    fault_proxy.cut(refuse=True)
    seconds, result = timed(store.head, "inbox/a.json")
    assert isinstance(result, Unavailable) and seconds < 1, (seconds, result)
    fault_proxy.resume()
    assert store.get("inbox/a.json")[0] == b"{}"


@pytest.mark.parametrize("status, code, error", [(503, "SlowDown", Unavailable), (500, "InternalError", Unavailable),
                                                 (403, "AccessDenied", Refused), (401, "Unauthorized", Refused)])
def test_server_errors_are_classified(s3_bucket, fault_proxy, status, code, error):
    store = s3_bucket.store(port=fault_proxy.port)
    fault_proxy.reply = (status, code)
    for request, args in ((store.get, ("inbox/a.json",)), (store.replace, ("inbox/a.json", b"{}", '"x"')),
                          (store.delete_if, ("inbox/a.json", '"x"'))):
        _, result = timed(request, *args)
        assert type(result) is error, result
        assert f"{status} {code}" in str(result) and "inbox/a.json" in str(result)


# ----------------------------------------------------------------------------- keys, config, credentials

@pytest.mark.parametrize("key", ["", "../outside", "inbox/../../x", "/inbox/a", "inbox/", "inbox//a", "inbox/./a",
                                 "inbox/a\nb", "inbox/" + "x" * 1100])
def test_keys_that_could_leave_the_prefix_are_refused_before_any_request(key):
    store = S3Bucket(None, "vidspool-none").store(port=free_port())  # nothing listens: a request would be Unavailable
    for request, args in ((store.get, (key,)), (store.put, (key, b"")), (store.delete, ([key],)),
                          (store.copy, ("inbox/a", key)), (store.delete_if, (key, '"x"'))):
        with pytest.raises(ValueError):
            request(*args)


def test_bucket_urls_are_parsed_and_bad_ones_named():
    assert parse_bucket_url("s3://media-jobs/studio/spool/") == BucketLocation("media-jobs", "studio/spool")
    assert parse_bucket_url("s3://media-jobs") == BucketLocation("media-jobs", "")
    assert parse_bucket_url("s3://media-jobs/").key("inbox/a.json") == "inbox/a.json"
    assert BucketLocation("media-jobs", "p").key("inbox/a.json") == "p/inbox/a.json"
    for url, words in (("s3://", "names no bucket"), ("s3://Media/x", "bucket name 'Media'"),
                       ("s3://ab/x", "bucket name 'ab'"), ("s3://192.168.1.1/x", "IP address"),
                       ("s3://media/a/../b", "segment"), ("s3://media/a//b", "segment"), ("s3://media/a?x=1", "'?'"),
                       ("/srv/spool", "not an s3:// URL")):
        with pytest.raises(ValueError, match=words.replace("?", r"\?")):
            parse_bucket_url(url)


def test_config_takes_a_bucket_root_and_the_s3_section(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('[spool]\nroot = "s3://media-jobs/spool"\n[s3]\nendpoint_url = "http://127.0.0.1:8333"\n'
                      'allow_http = true\npresign_seconds = 300\n')
    settings = load_settings(config)
    assert settings.bucket == BucketLocation("media-jobs", "spool")  # not a path under the config's folder
    assert (settings.s3.endpoint_url, settings.s3.presign_seconds, settings.s3.poll_seconds) == ("http://127.0.0.1:8333", 300, 2)
    monkeypatch.setenv("VIDSPOOL_S3__POLL_SECONDS", "0.5")
    monkeypatch.setenv("VIDSPOOL_S3__REGION", "eu-west-1")
    monkeypatch.setenv("VIDSPOOL_SPOOL__ROOT", "s3://other-bucket")
    settings = load_settings(config)
    assert (settings.s3.poll_seconds, settings.s3.region, settings.bucket.url) == (0.5, "eu-west-1", "s3://other-bucket")
    monkeypatch.setenv("VIDSPOOL_SPOOL__ROOT", str(tmp_path / "spool"))
    assert load_settings(config).bucket is None and load_settings(config).spool.root == tmp_path / "spool"

    monkeypatch.setenv("VIDSPOOL_S3__ALLOW_HTTP", "false")
    with pytest.raises(ConfigError, match="plain http"):
        load_settings(config)
    monkeypatch.delenv("VIDSPOOL_S3__ALLOW_HTTP")
    monkeypatch.setenv("VIDSPOOL_SPOOL__ROOT", "s3://Bad_Bucket/x")
    with pytest.raises(ConfigError, match="spool.root.*Bad_Bucket"):
        load_settings(config)
    assert S3Config.model_fields["poll_seconds"].description  # every key documents itself


def test_credentials_come_from_the_aws_chain(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a metadata service
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    (tmp_path / "credentials").write_text("[render]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = s\n")
    (tmp_path / "config").write_text("[profile render]\nregion = eu-central-1\n")
    location, config = BucketLocation("media-jobs", "spool"), S3Config(endpoint_url="https://s3.example.org")

    with pytest.raises(Refused, match="no AWS credentials found"):
        BucketStore(location, config)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    store = BucketStore(location, config)
    assert "X-Amz-Credential=AKIAENVIRONMENT%2F" in store.presign_get("inbox/a", 60)
    assert (store.credentials.source, store.region) == ("env", "us-east-1")

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_PROFILE", "render")
    store = BucketStore(location, config)
    assert "X-Amz-Credential=AKIAPROFILE%2F" in store.presign_get("inbox/a", 60)
    assert store.region == "eu-central-1" and "eu-central-1" in store.presign_get("inbox/a", 60)
    with pytest.raises(Refused, match="nosuch"):
        BucketStore(location, S3Config(endpoint_url="https://s3.example.org", profile="nosuch"))


# ----------------------------------------------------------------------------- the CLI

def vidspool(tmp_path: Path, endpoint: str, root: str, *args: str) -> subprocess.CompletedProcess:
    env = base_env(AWS_ACCESS_KEY_ID=CREDENTIALS.access_key_id, AWS_SECRET_ACCESS_KEY=CREDENTIALS.secret_access_key,
                   AWS_EC2_METADATA_DISABLED="true", VIDSPOOL_SPOOL__ROOT=root, VIDSPOOL_S3__ENDPOINT_URL=endpoint,
                   VIDSPOOL_S3__ALLOW_HTTP="true", VIDSPOOL_WORKERS__DEVICES='["cpu"]')
    (tmp_path / "config.toml").write_text("")  # defaults and the environment only
    return subprocess.run([sys.executable, "-m", "daemon", *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def test_doctor_probes_a_bucket_spool_and_run_refuses_it_for_now(seaweedfs, tmp_path):
    bucket = seaweedfs.new_bucket()
    out = vidspool(tmp_path, seaweedfs.endpoint, f"s3://{bucket}/spool", "doctor")
    assert "[ok  ] bucket s3://" in out.stdout and "exclusive create: a second PUT with If-None-Match: * was refused" in out.stdout, out
    proxy = FaultProxy(seaweedfs.port)
    proxy.strip_conditions = True
    try:
        out = vidspool(tmp_path, f"http://127.0.0.1:{proxy.port}", f"s3://{bucket}/spool", "doctor")
    finally:
        proxy.close()
    assert out.returncode == 1
    assert "[FAIL] exclusive create: the server accepted a second PUT with If-None-Match: *" in out.stdout, out

    out = vidspool(tmp_path, seaweedfs.endpoint, f"s3://{bucket}/spool", "run")
    assert out.returncode == 2 and "bucket spool" in out.stderr, out
    assert not (tmp_path / "s3:").exists()  # no folder spool made of the URL


def test_the_store_carries_on_after_the_server_restarts(seaweedfs):
    bucket = S3Bucket(seaweedfs, seaweedfs.new_bucket())
    store = bucket.store()
    etag = store.put("outbox/j1/status.json", b"queued")
    seaweedfs.child.kill()
    _, result = timed(store.get, "outbox/j1/status.json")
    assert isinstance(result, Unavailable), result
    seaweedfs.restart()
    results = [timed(store.get, "outbox/j1/status.json")[1] for _ in range(2)]  # a pooled connection may be dead
    assert results[-1] == (b"queued", etag), results
