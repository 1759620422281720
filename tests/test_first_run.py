"""First-run friction (issue 14, items 7–15), as a new user following the README meets it:
the `vidspool` command, models copied in while the daemon runs, submit's errors and ids,
config files used from other folders, cancel answers, the upload message, the media
library's colours, and voices/normalize answers. Real daemons, the real CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.registry import refresh_models
from tests.support import REPO, Daemon, base_env, drop_json, wait_for, wait_status


def cli(*args: str, root: Path | None = None, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    """`vidspool ARGS` as a user runs it; `root`: the spool, given by the environment."""
    env = base_env(**({"VIDSPOOL_SPOOL__ROOT": str(root)} if root else {}), VIDSPOOL_SPOOL__HOST="cli-host")
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def api_get(base: str, path: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def fake_diffusers_folder(folder: Path, class_name: str = "WanPipeline") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, "_diffusers_version": "0.42.1"}))
    return folder


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One daemon (one CPU worker) with its own, initially empty, registry folder."""
    base = tmp_path_factory.mktemp("first-run")
    registry = base / "models"
    registry.mkdir()
    d = Daemon(base / "spool", workers=["cpu"], VIDSPOOL_REGISTRY__DIR=str(registry)).start()
    d.registry = registry
    yield d
    d.stop()


# -- 7: the vidspool command on PATH --------------------------------------------------------


def test_install_cli_links_vidspool_onto_path_idempotently(tmp_path):
    bindir = tmp_path / "bin"
    for _ in range(2):  # a second run changes nothing
        out = subprocess.run(["make", "-s", "install-cli", f"BINDIR={bindir}"], cwd=REPO, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
    link = bindir / "vidspool"
    assert link.is_symlink() and link.resolve() == (REPO / ".venv" / "bin" / "vidspool").resolve()
    assert os.listdir(bindir) == ["vidspool"]
    run = subprocess.run([str(link), "normalize", "42"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=base_env())
    assert run.returncode == 0 and run.stdout == "forty-two\n", run.stderr
    link.unlink()
    link.write_text("someone else's vidspool\n")  # never replaced
    out = subprocess.run(["make", "-s", "install-cli", f"BINDIR={bindir}"], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode != 0 and "is not a link" in out.stderr
    assert link.read_text() == "someone else's vidspool\n"
    readme = (REPO / "README.md").read_text()
    first_cli = readme.index("vidspool submit")  # the first `vidspool` command the README shows
    assert ".venv/bin/vidspool" in readme[:first_cli] and "make install-cli" in readme[:first_cli]


# -- 8: model folders copied in while the daemon runs ---------------------------------------


def _model_job(shared: Daemon, job_id: str) -> dict:
    """A text-to-video job for model `fresh` with an unknown param: it fails model_not_found
    while the registry lacks `fresh`, and invalid_job (naming the param) once it has it,
    so no worker ever loads the fake folder."""
    drop_json(shared.root / "inbox", job_id, {"kind": "text-to-video", "model": "fresh",
                                              "params": {"prompt": "a fox", "bogus": 1}})
    doc = wait_status(shared.root, job_id, daemon=shared)
    assert doc["state"] == "failed"
    return doc["error"]


def _listed(shared: Daemon) -> dict[str, dict]:
    status, body = api_get(shared.api, "/api/v1/models")
    assert status == 200, body
    return {m["name"]: m for m in body["models"]}


def test_a_model_folder_is_found_and_dropped_without_a_reload(shared):
    fresh = shared.registry / "fresh"
    assert _model_job(shared, "m-before")["code"] == "model_not_found"
    # Being copied: a component folder, no model_index.json yet: not a model.
    (fresh / "transformer").mkdir(parents=True)
    (fresh / "transformer" / "config.json").write_text("{}")
    assert "fresh" not in _listed(shared)
    assert _model_job(shared, "m-half")["code"] == "model_not_found"
    # The copy finishes: the next job finds it (no models list in between, no SIGHUP).
    fake_diffusers_folder(fresh)
    error = _model_job(shared, "m-after")
    assert error["code"] == "invalid_job" and "params.bogus" in error["message"], error
    listed = _listed(shared)
    assert listed["fresh"]["kinds"] == ["text-to-video", "video-to-video"]
    assert listed["fresh"]["path"] == "registry/fresh"  # relative: no host path in an answer
    # A folder that appears shows in the models list by itself.
    fake_diffusers_folder(shared.registry / "other", "LTXPipeline")
    assert "other" in _listed(shared)
    # A folder that is removed drops out: of jobs, and of the list.
    shutil.rmtree(fresh)
    assert _model_job(shared, "m-gone")["code"] == "model_not_found"
    assert sorted(_listed(shared)) == ["other"]
    rescans = [e for e in shared.log_events() if e.get("event") == "registry.rescanned"]
    assert any(e["added"] == ["fresh"] for e in rescans) and any(e["removed"] == ["fresh"] for e in rescans)
    assert shared.proc.poll() is None


def test_a_rescan_never_drops_or_replaces_a_config_entry(tmp_path):
    registry = tmp_path / "models"
    fake_diffusers_folder(registry / "found")
    config = tmp_path / "config.toml"
    config.write_text(f'[registry]\ndir = "{registry}"\n[models.keep]\npath = "{tmp_path / "nowhere"}"\n'
                      'kinds = ["text-to-video"]\n')
    settings = load_settings(config)
    models = settings.models
    assert sorted(models) == ["found", "keep"]
    assert refresh_models(settings) is False  # nothing changed
    fake_diffusers_folder(registry / "keep", "LTXPipeline")  # a folder named like the config entry
    shutil.rmtree(registry / "found")
    assert refresh_models(settings) is True
    assert settings.models is models, "updated in place: every holder of the settings sees it"
    assert sorted(models) == ["keep"] and models["keep"].path == tmp_path / "nowhere"


# -- 9: submit's errors -----------------------------------------------------------------------


def test_submit_refuses_missing_and_bad_files_and_leaves_nothing(tmp_path):
    root = tmp_path / "spool"
    assert cli("init", root=root).returncode == 0
    inbox_before = sorted(os.listdir(root / "inbox"))  # the preset inboxes
    good = tmp_path / "bad.json"
    good.write_text(json.dumps({"kind": "probe", "inputs": {"data": "missing.png"}}))
    not_json = tmp_path / "broken.json"
    not_json.write_text('{"kind": "probe",')
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"x")
    other = tmp_path / "sub"
    other.mkdir()
    (other / "blob.bin").write_bytes(b"y")
    cases = [
        ((str(good), str(tmp_path / "missing.png")), ["missing.png", "does not exist"]),
        ((str(tmp_path / "nojob.json"),), ["nojob.json", "does not exist"]),
        ((str(not_json),), ["broken.json", "is not valid JSON"]),
        ((str(a_list),), ["list.json", "must hold a JSON object, not list"]),
        ((str(good), str(blob), str(other / "blob.bin")), ["same name", "blob.bin"]),
        ((str(good), str(other)), ["sub", "is not a file"]),
        ((str(good), "--preset", "nosuch"), ["no preset 'nosuch'"]),
    ]
    for args, words in cases:
        out = cli("submit", *args, root=root)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr and all(w in out.stderr for w in words), (args, out.stderr)
        assert out.stdout == ""
        assert sorted(os.listdir(root / "inbox")) == inbox_before, args


# -- 10: relative paths in a config file ----------------------------------------------------


def test_relative_paths_in_a_config_file_follow_the_file(tmp_path, monkeypatch):
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "tokens").write_text("t0ken-0123456789abcdef\n")
    (conf / "abs").mkdir()
    config = conf / "config.toml"
    config.write_text(
        '[spool]\nroot = "spool"\nprobe_path = "mnt/spool"\n'
        '[workers]\nscratch_dir = "scratch"\n'
        '[api]\ntokens_file = "tokens"\n'
        '[registry]\ndir = "models"\n'
        f'[models.local]\npath = "weights/local"\n[models.absolute]\npath = "{conf / "abs"}"\n'
        '[voices.anna]\nengine = "coqui"\nmodel = "voices/tts"\nreference_audio = "voices/anna.wav"\n'
        '[voices.bob]\nvoice = "en-us"\n')
    monkeypatch.chdir(tmp_path)  # anywhere but the config's folder
    for var in [k for k in os.environ if k.startswith("VIDSPOOL_")]:
        monkeypatch.delenv(var)
    s = load_settings(Path("etc/config.toml"))
    assert s.spool.root == conf / "spool" and s.spool.probe_path == conf / "mnt" / "spool"
    assert s.workers.scratch_dir == conf / "scratch" and s.api.tokens_file == conf / "tokens"
    assert s.registry.dir == conf / "models"
    assert s.models["local"].path == conf / "weights" / "local" and s.models["absolute"].path == conf / "abs"
    assert s.voices["anna"].model == conf / "voices" / "tts"
    assert s.voices["anna"].reference_audio == conf / "voices" / "anna.wav" and s.voices["bob"].model is None
    monkeypatch.setenv("VIDSPOOL_SPOOL__ROOT", "from-env")
    assert load_settings(config).spool.root == Path("from-env"), "the environment's paths stay as given"


def test_a_config_file_works_from_another_folder(tmp_path):
    conf = tmp_path / "etc"
    token = "t0ken-0123456789abcdef"
    conf.mkdir()
    (conf / "tokens").write_text(token + "\n")
    config = conf / "config.toml"
    config.write_text('[spool]\nroot = "spool"\n[workers]\nscratch_dir = "scratch"\n'
                      '[api]\ntokens_file = "tokens"\n[registry]\ndir = "models"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = conf / "spool"
    d = Daemon(root)
    for key in ("VIDSPOOL_SPOOL__ROOT", "VIDSPOOL_REGISTRY__DIR"):  # from the config file, relative
        d.settings.pop(key)
    assert cli("--config", str(config), "init", cwd=elsewhere).returncode == 0
    d.proc = subprocess.Popen([sys.executable, "-m", "daemon", "--config", "../etc/config.toml", "run"], cwd=elsewhere,
                              env=base_env(**d.settings), stdout=open(d.log_path, "ab"), stderr=subprocess.STDOUT)
    try:
        d.wait_ready()
        assert not (elsewhere / "spool").exists()
        assert api_get(d.api, "/api/v1/models")[0] == 401, "tokens_file was read"
        fake_diffusers_folder(conf / "models" / "folder-model")  # after start: no model to warm up
        status, body = api_get(d.api, "/api/v1/models", token)
        assert status == 200 and [m["name"] for m in body["models"]] == ["folder-model"], body
        job = elsewhere / "hello.json"
        job.write_text(json.dumps({"kind": "probe"}))
        out = cli("--config", "../etc/config.toml", "submit", "hello.json", "--wait", cwd=elsewhere)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == "hello"
        summary = cli("--config", str(config), "status", cwd=elsewhere)
        assert summary.returncode == 0 and json.loads(summary.stdout)["spool"] == str(root)
        assert "test-host" in json.loads(summary.stdout)["hosts"]
        assert (conf / "scratch").is_dir()
    finally:
        assert d.stop() == 0


def test_commands_without_a_spool_say_so_and_fail(tmp_path):
    missing = tmp_path / "nothing-here"
    job = tmp_path / "j.json"
    job.write_text(json.dumps({"kind": "probe"}))
    for args in (("status",), ("status", "some-id"), ("submit", str(job)), ("cancel", "some-id")):
        out = cli(*args, root=missing)
        assert out.returncode == 2 and f"no spool at {missing}" in out.stderr, (args, out.stdout, out.stderr)
    assert not missing.exists()


# -- 11: cancel of an ended or unknown job ----------------------------------------------------


def test_cancel_of_an_ended_or_unknown_job_is_refused_everywhere(shared):
    drop_json(shared.root / "inbox", "ended", {"kind": "probe"})
    assert wait_status(shared.root, "ended", daemon=shared)["state"] == "completed"
    out = cli("cancel", "ended", root=shared.root)
    assert out.returncode == 1 and "has already ended (state completed)" in out.stderr, out.stderr
    assert not (shared.root / "inbox" / "ended.cancel").exists(), "nothing dropped for an ended job"
    out = cli("cancel", "no-such-job", root=shared.root)
    assert out.returncode == 1 and "no job 'no-such-job'" in out.stderr
    req = urllib.request.Request(f"{shared.api}/api/v1/jobs/ended", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=20)
    assert err.value.code == 409
    # Cancel files for the same two: each refused with a warning naming the id and the reason.
    for name in ("ended", "no-such-job"):
        (shared.root / "inbox" / f".{name}.cancel.part").touch()
        os.rename(shared.root / "inbox" / f".{name}.cancel.part", shared.root / "inbox" / f"{name}.cancel")

    def refusals() -> dict[tuple[str, str], dict]:
        return {(e["job_id"], e["source"]): e for e in shared.log_events() if e.get("event") == "job.cancel_refused"}

    wanted = {("ended", "api"), ("ended", "file"), ("no-such-job", "file")}
    wait_for(lambda: wanted <= set(refusals()), what="job.cancel_refused from the API and both files")
    seen = refusals()
    for source in ("api", "file"):
        assert seen["ended", source]["reason"] == "already completed" and seen["ended", source]["state"] == "completed"
        assert seen["ended", source]["level"] == "warning"
    assert seen["no-such-job", "file"]["reason"] == "no such job"
    assert wait_status(shared.root, "ended", daemon=shared)["state"] == "completed"
    wait_for(lambda: not (shared.root / "inbox" / "ended.cancel").exists(), what="the cancel file taken")


# -- 12: submit keeps NAME as the id ------------------------------------------------------------


def test_submit_gives_the_job_files_name_as_its_id(shared, tmp_path):
    job = tmp_path / "long.json"
    job.write_text(json.dumps({"kind": "probe"}))
    ids = []
    for _ in range(2):
        out = cli("submit", str(job), "--wait", root=shared.root)
        assert out.returncode == 0, out.stderr
        ids.append(out.stdout.splitlines()[0])
    assert ids == ["long", "long-2"]
    for job_id in ids:
        doc = wait_status(shared.root, job_id, daemon=shared)
        assert doc["id"] == job_id and doc["state"] == "completed"
    assert wait_status(shared.root, "long", daemon=shared)["drop"] == "inbox/long"
    odd = tmp_path / "my job!.json"
    odd.write_text(json.dumps({"kind": "probe"}))
    out = cli("submit", str(odd), "--wait", root=shared.root)
    assert out.returncode == 0 and out.stdout.splitlines()[0] == "my_job_", out.stderr
    named = tmp_path / "whatever.json"
    named.write_text(json.dumps({"id": "given-id", "kind": "probe"}))
    out = cli("submit", str(named), root=shared.root)
    assert out.returncode == 0 and out.stdout.strip() == "given-id", out.stderr
    assert not [p for p in (shared.root / "inbox").iterdir() if p.name.endswith(".part")]


# -- 13: the upload named job.json ----------------------------------------------------------------


def test_an_upload_named_job_json_is_said_to_be_reserved(shared):
    import aiohttp

    async def post() -> tuple[int, dict]:
        form = aiohttp.FormData()
        form.add_field("job", json.dumps({"kind": "probe"}), content_type="application/json")
        form.add_field("file", b"{}", filename="job.json", content_type="application/octet-stream")
        async with aiohttp.ClientSession() as session:
            async with session.post(shared.api + "/api/v1/jobs", data=form) as r:
                return r.status, await r.json()

    status, body = asyncio.run(post())
    assert status == 400, body
    message = body["error"]["message"]
    assert "job.json is reserved" in message and "`job` field" in message and "letters, digits" not in message


# -- 14: the media library's clips have their colours ---------------------------------------------

# The CSS colours the tags name (the library's first tag of each clip is its colour).
CSS = {"orange": (255, 165, 0), "blue": (0, 0, 255), "green": (0, 128, 0), "gray": (128, 128, 128),
       "navy": (0, 0, 128)}


def _mean_colour(clip: Path) -> tuple[float, float, float]:
    import av

    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0))
        return tuple(frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0))


def _nearest_css(rgb) -> str:
    return min(CSS, key=lambda c: sum((a - b) ** 2 for a, b in zip(CSS[c], rgb)))


def _sha256s(library: Path) -> dict[str, str]:
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(library.glob("*.mp4"))}


def test_media_library_clips_differ_and_have_their_tagged_colours(tmp_path):
    library = tmp_path / "library"
    make = [sys.executable, str(REPO / "scripts" / "make_media_library.py"), str(library)]
    subprocess.run(make, check=True, capture_output=True, timeout=300)
    sums = _sha256s(library)
    assert sorted(sums) == ["city", "forest", "fox", "night", "river"]
    assert len(set(sums.values())) == 5, sums
    for name in sums:
        colour = (library / f"{name}.tags").read_text().split()[0]
        mean = _mean_colour(library / f"{name}.mp4")
        assert _nearest_css(mean) == colour, (name, colour, mean)
        assert all(abs(a - b) < 50 for a, b in zip(CSS[colour], mean)), (name, colour, mean)
    # Run again: nothing is remade. A clip from an older recipe (no stamp) is remade.
    subprocess.run(make, check=True, capture_output=True, timeout=300)
    assert _sha256s(library) == sums
    stamps = json.loads((library / ".make_media_library.json").read_text())
    del stamps["fox"]
    (library / ".make_media_library.json").write_text(json.dumps(stamps))
    shutil.copyfile(library / "city.mp4", library / "fox.mp4")  # like the old script's grey clip
    subprocess.run(make, check=True, capture_output=True, timeout=300)
    assert _sha256s(library)["fox"] != sums["city"]
    assert _nearest_css(_mean_colour(library / "fox.mp4")) == "orange"


# -- 15: voices and normalize answers --------------------------------------------------------------


def test_voices_for_an_unknown_language_fail_naming_the_known_ones():
    out = cli("voices", "--language", "xx")
    assert out.returncode == 1 and out.stdout == ""
    assert "no voices for language 'xx'" in out.stderr
    known = out.stderr.split("known languages:")[1]
    assert " en," in known and " de," in known and " fr," in known, out.stderr
    out = cli("voices", "--language", "de")
    assert out.returncode == 0 and out.stdout.strip()


@pytest.mark.parametrize("language, text, spoken", [
    ("en", "1e6 Hz", "one million hertz"),
    ("en", "2.5e-3 m", "two point five times ten to the power of minus three meters"),
    ("en", "x+\\frac{1}{2}, y", "x plus one half, y"),
    ("en", "+½, then 1 ½.", "plus one half, then one and one half."),
    ("de", "1e6 Hz", "eine Million Hertz"),
    ("fr", "1e-9", "un fois dix puissance moins neuf"),
])
def test_normalize_speaks_scientific_notation_and_fractions(language, text, spoken):
    out = cli("normalize", text, "--language", language)
    assert out.returncode == 0 and out.stdout == spoken + "\n", out.stderr
