"""The OpenAPI document (daemon/http/openapi.py): a valid OpenAPI 3.1 document of every route, and
true: schemathesis sends generated requests to a real daemon and checks every answer
against it (no 5xx, documented status codes, content types and schemas), with auth off and on.

The daemons here run without the test plugin kinds (`probe` writes files wherever its params
say) and with max_frame_pixels = 256 (one 16x16 frame), so generated jobs fail at validation
instead of rendering video on the test machine.
"""

from __future__ import annotations

import json
import os

import jsonschema_rs
import requests
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from daemon.http.api import Api
from daemon.config import load_settings
from daemon.http.openapi import openapi_document
from pipeline.kinds import load_kinds
from tests.support import REPO, Daemon, wait_status

TOKEN = "secret"
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_schema_conformance]
# Open routes: no token needed (the document says `security: []`).
OPEN = {("GET", "/"), ("GET", "/static/{name}"), ("GET", "/api/v1/health")}
# The event stream never ends: schemathesis reads it until the request timeout, then checks
# the events it got. That timeout is also what every other request may take.
REQUEST_TIMEOUT = 3.0  # also what any request may take on a loaded machine (fsync can stall a second)
# Examples per operation and generation mode; OPENAPI_EXAMPLES=200 for a deeper search.
EXAMPLES = int(os.environ.get("OPENAPI_EXAMPLES", "6"))
# OPENAPI_COVERAGE=1 adds schemathesis's coverage phase (boundary values, every enum, …).
COVERAGE = os.environ.get("OPENAPI_COVERAGE") == "1"

# A registered model whose folder is missing: listed, loadable (fails at once, no torch).
GHOST = {"ghost": {"path": "/nonexistent/ghost", "kinds": ["text-to-video"]}}


def _daemon_env(**extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(REPO), "VIDSPOOL_LIMITS__MAX_FRAME_PIXELS": "256",
            "VIDSPOOL_MODELS": json.dumps(GHOST), **extra}


def _get(url: str) -> dict:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def _load(d: Daemon, token: str | None = None):
    config = SchemathesisConfig.from_dict({
        "request-timeout": REQUEST_TIMEOUT,
        "generation": {"max-examples": EXAMPLES},
        "phases": {"coverage": {"enabled": COVERAGE}, "stateful": {"enabled": False}},
    })
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    schema = schemathesis.openapi.from_url(f"{d.api}/api/v1/openapi.json", config=config, headers=headers)
    schema.config.update(base_url=d.api)
    return schema


@pytest.fixture(scope="module")
def open_daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("openapi") / "spool", workers=["cpu"], **_daemon_env()).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def auth_daemon(tmp_path_factory):
    env = _daemon_env(VIDSPOOL_API__TOKENS=json.dumps([TOKEN]))
    d = Daemon(tmp_path_factory.mktemp("openapi-auth") / "spool", workers=["cpu"], **env).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def open_schema(open_daemon):
    return _load(open_daemon)


@pytest.fixture(scope="module")
def auth_schema(auth_daemon):
    return _load(auth_daemon, TOKEN)


# -- the document itself ----------------------------------------------------------------
def _document() -> dict:
    return openapi_document(load_kinds(), load_settings())


def _schemas_in(node, where="#"):
    """Every JSON Schema in the document: components and `schema` of parameters/contents."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield f"{where}/{key}", value
            elif key == "schemas" and where == "#/components":
                for name, schema in value.items():
                    yield f"{where}/schemas/{name}", schema
            else:
                yield from _schemas_in(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schemas_in(value, f"{where}/{i}")


def test_document_is_valid_openapi_3_1():
    doc = _document()
    assert doc["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(doc).validate()  # the OpenAPI 3.1 meta-schema
    found = list(_schemas_in(doc))
    assert len(found) > 40
    for where, schema in found:  # the meta-schema leaves the JSON Schemas in it alone
        assert jsonschema_rs.meta.is_valid(schema), f"{where}: {jsonschema_rs.meta.validate(schema)}"
    json.dumps(doc)


def test_every_route_is_described():
    class Handlers:  # Api.routes() only names the handlers
        def __getattr__(self, name):
            async def handler(request):  # pragma: no cover
                raise AssertionError(name)
            return handler

    routes = {(r.method, r.path) for r in Api.routes(Handlers())}
    documented = {(method.upper(), path) for path, item in _document()["paths"].items()
                  for method in item if method != "parameters"}
    assert documented == routes


def test_every_kind_and_its_params_are_in_the_job_schema():
    kinds = load_kinds()
    doc = _document()
    schemas = doc["components"]["schemas"]
    assert schemas["Job"]["properties"]["kind"]["enum"] == sorted(kinds)
    assert set(schemas["Job"]["discriminator"]["mapping"]) == set(kinds)
    for name, kind in kinds.items():
        params = schemas[f"Params.{name}"]
        assert set(kind.params.model_json_schema()["properties"]) <= set(params["properties"])
    # A valid job of each built-in kind validates against the request body schema.
    validator = jsonschema_rs.validator_for({"$ref": "#/components/schemas/Job", "components": doc["components"]})
    assert validator.is_valid({"kind": "slideshow", "params": {"slides": ["hello"], "width": 640}, "labels": {"a": "b"}})
    assert validator.is_valid({"kind": "text-to-video", "model": "wan", "params": {"prompt": "a fox"}})
    assert validator.is_valid({"kind": "image-to-video", "model": "svd", "inputs": {"image": "cat.png"}})
    assert not validator.is_valid({"kind": "slideshow", "colour": "red"})
    assert not validator.is_valid({"kind": "text-to-video", "params": {}})  # prompt is required
    assert not validator.is_valid({"kind": "text-to-video"})
    assert not validator.is_valid({"kind": "image-to-video", "model": "svd"})  # the image is required
    assert not validator.is_valid({"kind": "teleport"})


def test_params_the_config_fills_in_are_not_required():
    kinds = load_kinds()
    plain = openapi_document(kinds, load_settings())["components"]["schemas"]["Params.text-to-video"]
    settings = load_settings(kinds={"text-to-video": {"defaults": {"prompt": "a fox"}}})
    filled = openapi_document(kinds, settings)["components"]["schemas"]["Params.text-to-video"]
    assert "prompt" in plain["required"] and "prompt" not in filled.get("required", [])
    assert "model" in filled["properties"]  # kinds with a model take params.model too


def test_the_served_document_is_the_document(open_daemon):
    served = _get(f"{open_daemon.api}/api/v1/openapi.json")
    assert served == json.loads(json.dumps(openapi_document(load_kinds(), load_settings(models=GHOST))))
    assert served["components"]["schemas"]["Job"]["properties"]["kind"]["enum"] == sorted(
        _get(f"{open_daemon.api}/api/v1/info")["kinds"])


# -- schemathesis against real daemons ------------------------------------------------------
@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """schemathesis 4.32.5's from_fixture reads and rewrites `node._nodeid`, which pytest 9.2
    no longer has (it keeps `_id`); give it one to read. Harmless where it exists."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


open_api = schemathesis.pytest.from_fixture("open_schema")
auth_api = schemathesis.pytest.from_fixture("auth_schema")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@open_api.parametrize()
@FUZZ
def test_api_matches_document(case):
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code != 401  # no tokens configured: no auth


@auth_api.parametrize()
@FUZZ
def test_api_matches_document_with_tokens(case):
    response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)
    assert response.status_code not in (401, 403)  # the token has every scope


def test_answers_without_a_token_match_the_document(auth_schema):
    """Every operation without a token: 401 in the documented shape (open routes: not 401)."""
    path_parameters = {"id": "nosuchjob", "name": "app.js"}
    for result in auth_schema.get_all_operations():
        op = result.ok()
        params = {k: v for k, v in path_parameters.items() if "{" + k + "}" in op.path}
        case = op.Case(path_parameters=params, headers={})
        response = case.call(timeout=REQUEST_TIMEOUT)
        case.validate_response(response, checks=CHECKS)
        assert (response.status_code == 401) == ((op.method.upper(), op.path) not in OPEN), (op.label, response.status_code)


def _submit(d: Daemon, schema, job: dict) -> str:
    """Submits through the API (checked against the document); waits for the end; the id."""
    response = schema["/api/v1/jobs"]["POST"].Case(body=job, media_type="application/json").call_and_validate(checks=CHECKS)
    assert response.status_code == 202
    job_id = response.json()["id"]  # the fuzzing before may have taken the id asked for
    wait_status(d.root, job_id, daemon=d)
    return job_id


def test_result_files_and_ranges_match_the_document(open_daemon, open_schema):
    """A real result: the whole file (200), a range (206), past its end (416), /download, and
    a file the job does not have (404)."""
    job = {"id": "tiny", "kind": "slideshow",
           "params": {"slides": ["hi"], "width": 16, "height": 16, "fps": 1, "seconds_per_slide": 1}}
    job_id = _submit(open_daemon, open_schema, job)
    status = open_schema["/api/v1/jobs/{id}"]["GET"].Case(path_parameters={"id": job_id}).call_and_validate(checks=CHECKS)
    assert status.json()["state"] == "completed", status.json()
    size = {f["name"]: f["size"] for f in status.json()["result"]["files"]}["video.mp4"]

    files = open_schema["/api/v1/jobs/{id}/files/{name}"]["GET"]
    download = open_schema["/api/v1/jobs/{id}/download"]["GET"]
    for op, name, headers, expected in [
        (files, "video.mp4", {}, 200),
        (files, "video.mp4", {"Range": "bytes=0-9"}, 206),
        (files, "video.mp4", {"Range": f"bytes={size}-"}, 416),
        (files, "video.mp4", {"Range": "bytes=banana"}, 416),
        (files, "nothere.mp4", {}, 404),
        (download, None, {"Range": "bytes=-4"}, 206),
        (download, None, {}, 200),
    ]:
        params = {"id": job_id, **({"name": name} if name else {})}
        response = op.Case(path_parameters=params, headers=headers).call_and_validate(checks=CHECKS)
        assert response.status_code == expected, (name, headers, response.status_code)
        if expected == 200:  # schemathesis keeps headers as lower-case names → lists of values
            assert len(response.content) == size and response.headers["content-type"] == ["video/mp4"]
        if expected == 206:
            assert response.headers["content-range"][0].startswith("bytes ")


def _events(content: bytes) -> list[dict]:
    events = []
    for block in content.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            events.append(fields)
    return events


def test_invalid_jobs_and_events_carry_status_documents(open_daemon, open_schema):
    """An invalid job's status (odd kind and labels kept as given) is a Status; so is the data
    of every `status` event, replayed from the start of the stream."""
    doc = _get(f"{open_daemon.api}/api/v1/openapi.json")
    status_schema = jsonschema_rs.validator_for({"$ref": "#/components/schemas/Status", "components": doc["components"]})
    job_id = _submit(open_daemon, open_schema, {"id": "odd", "kind": "teleport", "labels": {"n": 1}})
    status = open_schema["/api/v1/jobs/{id}"]["GET"].Case(path_parameters={"id": job_id}).call_and_validate(checks=CHECKS)
    assert status.json()["error"]["code"] == "invalid_job" and status.json()["labels"] == {"n": 1}

    events = open_schema["/api/v1/events"]["GET"]
    reset = events.Case(headers={"Last-Event-ID": "gone-1"}).call_and_validate(checks=CHECKS)
    first = _events(reset.content)[0]
    assert first["event"] == "reset" and first["data"] == "{}"
    run = first["id"].rsplit("-", 1)[0]
    replay = events.Case(headers={"Last-Event-ID": f"{run}-0"}).call_and_validate(checks=CHECKS)
    statuses = [json.loads(e["data"]) for e in _events(replay.content) if e.get("event") == "status"]
    assert any(s["id"] == job_id for s in statuses), statuses
    for s in statuses:
        status_schema.validate(s)



def test_models_match_the_document(open_schema):
    """The registry listing, load (202, fails in the worker) and unload of a registered model."""
    listing = open_schema["/api/v1/models"]["GET"].Case().call_and_validate(checks=CHECKS)
    ghost = {m["name"]: m for m in listing.json()["models"]}["ghost"]
    assert ghost["available"] is False and ghost["problem"]
    for action in ("load", "unload"):
        op = open_schema[f"/api/v1/models/{{name}}/{action}"]["POST"]
        assert op.Case(path_parameters={"name": "ghost"}).call_and_validate(checks=CHECKS).status_code == 202


def test_refusals_match_the_document(open_daemon, open_schema):
    """409 (cancel an ended job), 413 (job JSON over the limit), 400 (not an object)."""
    job_id = _submit(open_daemon, open_schema, {"kind": "teleport"})
    cancel = open_schema["/api/v1/jobs/{id}"]["DELETE"].Case(path_parameters={"id": job_id})
    assert cancel.call_and_validate(checks=CHECKS).status_code == 409
    submit = open_schema["/api/v1/jobs"]["POST"]
    big = {"kind": "slideshow", "params": {"slides": ["x" * 1_100_000]}}
    for body, status in [(big, 413), ([1, 2], 400)]:
        response = submit.Case(body=body, media_type="application/json").call_and_validate(checks=CHECKS)
        assert response.status_code == status, response.text


MALFORMED_MULTIPART = {
    "no boundary": ("multipart/form-data", b"x"),
    "no starting boundary": ("multipart/form-data; boundary=XX", b"x"),
    "control character in a part header": (
        "multipart/form-data; boundary=XX", b'--XX\r\nContent-Disposition: form-data; name="\x11"\r\n\r\nx\r\n--XX--\r\n'),
    "no closing boundary": (
        "multipart/form-data; boundary=XX", b'--XX\r\nContent-Disposition: form-data; name="job"\r\n\r\n{"kind": "slideshow"}'),
    "nested multipart": (
        "multipart/form-data; boundary=XX",
        b'--XX\r\nContent-Disposition: form-data; name="a"; filename="a.txt"\r\nContent-Type: multipart/mixed; boundary=YY'
        b"\r\n\r\n--YY\r\n\r\nz\r\n--YY--\r\n--XX--\r\n"),
    "unknown transfer encoding": (
        "multipart/form-data; boundary=XX",
        b'--XX\r\nContent-Disposition: form-data; name="job"\r\nContent-Transfer-Encoding: bogus\r\n\r\n{}\r\n--XX--\r\n'),
}


@pytest.mark.parametrize("what", MALFORMED_MULTIPART)
def test_malformed_multipart_is_a_documented_refusal(open_daemon, open_schema, what):
    """What schemathesis found (and its neighbours): a broken multipart body is the client's
    fault, a 400 in the error shape, never a 500."""
    content_type, body = MALFORMED_MULTIPART[what]
    response = requests.post(f"{open_daemon.api}/api/v1/jobs", data=body, headers={"Content-Type": content_type},
                             timeout=10)
    case = open_schema["/api/v1/jobs"]["POST"].Case(media_type="multipart/form-data")
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 400, response.text
