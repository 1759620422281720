"""The OpenAPI 3.1 document of the HTTP API (SPEC §6, docs/api.md), served at
GET /api/v1/openapi.json.

Built from the installed kinds (each kind's params schema comes from its pydantic model)
and the settings (limits, model defaults), so it describes this daemon as it runs.
Every GET route also answers HEAD (aiohttp does it for us); HEAD is not listed.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from contract import status as status_document
from contract.status import LIST_FIELDS, PREVIEW_FILE, STATES
from daemon import __version__
from daemon.http.paths import API, STATIC_FILES
from daemon.config import WebhookTarget
from daemon.http.pause_requests import PauseRequest, ResumeRequest

if TYPE_CHECKING:
    from daemon.config import Settings
    from contract.kinds import KindSpec

REF = "#/components/schemas/"
# Written without a lookahead (not starting with '.'), so that every generator understands it.
JOB_ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"
NO_AUTH: list = []  # an operation's `security: []`: no token needed

Schema = dict[str, Any]


def openapi_document(kinds: dict[str, KindSpec], settings: Settings) -> dict:
    """The complete document: paths of every route, components, bearer security."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vidspool",
            "version": __version__,
            "description": (
                "Video jobs from a spool folder, over HTTP. Submitting goes through the inbox like a "
                "dropped file: the answer (202) comes before validation, and an invalid job ends as a "
                "`failed` status with error code `invalid_job`. Errors are `{\"error\": {\"code\", "
                "\"message\"}}`. Every GET also answers HEAD."),
        },
        "security": [{"bearerAuth": []}, {"accessToken": []}],
        "tags": [{"name": n} for n in ("daemon", "jobs", "files", "events", "models", "speech", "page")],
        "paths": _paths(),
        "components": {
            "securitySchemes": _security_schemes(),
            "schemas": {**_schemas(), **_job_schemas(kinds, settings)},
            "responses": _error_responses(settings),
            "parameters": _parameters(),
        },
    }


# -- small builders -------------------------------------------------------------------
def ref(name: str) -> Schema:
    return {"$ref": REF + name}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: list[str] | None = None, *, closed: bool = False, **extra) -> Schema:
    """An object schema; `required` defaults to every property."""
    schema = {"type": "object", "properties": properties,
              "required": list(properties) if required is None else required, **extra}
    if closed:
        schema["additionalProperties"] = False
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
STR_LIST = array(STR)


def json_content(schema: Schema) -> dict:
    return {"application/json": {"schema": schema}}


def ok(description: str, schema: Schema, status: str = "200") -> dict:
    return {status: {"description": description, "content": json_content(schema)}}


def errors(*statuses: int) -> dict:
    return {str(s): {"$ref": f"#/components/responses/{ERROR_RESPONSES[s][0]}"} for s in statuses}


def operation(op_id: str, summary: str, tag: str, responses: dict, *, auth: bool = True,
              scope: str = "read", parameters: list | None = None, body: dict | None = None,
              description: str | None = None) -> dict:
    """One operation. `auth`: behind the tokens (adds 401/403); `scope`: the token scope it needs."""
    op: dict = {"operationId": op_id, "summary": summary, "tags": [tag]}
    if description or auth:
        scope_note = f"Needs a token with the `{scope}` scope when tokens are configured." if auth else ""
        op["description"] = " ".join(x for x in (description, scope_note) if x)
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    op["responses"] = {**responses, **(errors(401, 403) if auth else {})}
    if not auth:
        op["security"] = NO_AUTH
    return op


def param(name: str, where: str, schema: Schema, description: str, required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": description}


def pref(name: str) -> dict:
    return {"$ref": f"#/components/parameters/{name}"}


# -- paths ----------------------------------------------------------------------------
def _paths() -> dict:
    spool_errors = (503, 507)  # a broken spool (dead mount: 503, full disk: 507)
    return {
        "/": {"get": operation("page", "The dashboard page", "page", _file_responses("text/html"), auth=False)},
        "/static/{name}": {"get": operation(
            "static", "A static file of the page", "page",
            {**_file_responses(*STATIC_FILES.values()), **errors(404)}, auth=False,
            parameters=[param("name", "path", {"type": "string", "enum": list(STATIC_FILES)}, "file name")])},
        "/metrics": {"get": operation(
            "metrics", "Prometheus metrics", "daemon",
            {"200": {"description": "Prometheus text exposition format 0.0.4",
                     "content": {"text/plain": {"schema": STR}}}})},
        f"{API}/health": {"get": operation(
            "health", "Health: spool writable and a live worker", "daemon",
            {**ok("healthy", ref("Health")),
             "503": {"description": "unhealthy: the reason says why", "content": json_content(ref("Health"))}},
            auth=False)},
        f"{API}/info": {"get": operation("info", "Version, host, devices, kinds, models, presets, limits",
                                         "daemon", ok("the daemon", ref("Info")))},
        f"{API}/queue": {"get": operation("queue", "Devices (busy, job, models, memory) and queued jobs in order",
                                          "daemon", ok("devices and the queue", ref("Queue")))},
        f"{API}/jobs": {
            "get": operation("listJobs", "List jobs (by id), filtered, paginated", "jobs",
                             {**ok("a page of jobs", ref("JobList")), **errors(400, *spool_errors)},
                             parameters=[pref(n) for n in ("state", "kind", "label", "limit", "cursor")]),
            "post": operation(
                "submitJob", "Submit a job (JSON, or multipart with input files)", "jobs",
                {**ok("accepted: the id is reserved; validation follows (an invalid job ends `failed`)",
                      ref("Submitted"), "202"),
                 **errors(400, 413, 429, *spool_errors)},
                scope="submit", body=_submit_body()),
        },
        f"{API}/jobs/{{id}}": {
            "parameters": [pref("jobId")],
            "get": operation("getJob", "The status document (SPEC §4)", "jobs",
                             {**ok("the status", ref("Status")), **errors(404, *spool_errors)}),
            "delete": operation(
                "cancelJob", "Cancel: a queued job at once, a running one at its next step", "jobs",
                {**ok("canceled, or cancel requested", ref("Canceled"), "202"), **errors(404, 409, *spool_errors)},
                scope="submit"),
        },
        f"{API}/jobs/{{id}}/results": {
            "parameters": [pref("jobId")],
            "delete": operation(
                "deleteResults", "Delete an ended job's result files (status, log and inputs stay)", "jobs",
                {**ok("deleted (or already)", ref("ResultsDeleted")), **errors(404, 409, *spool_errors)},
                scope="submit"),
        },
        f"{API}/stats": {"get": operation(
            "stats", "Requests, outcomes, generation times, queue waits, storage, per model: from the outbox",
            "daemon", {**ok("the statistics", ref("Stats")), **errors(*spool_errors)})},
        f"{API}/jobs/{{id}}/files/{{name}}": {"get": operation(
            "getFile", "A result file (Range requests)", "files",
            {**_file_responses("*/*"), **errors(404, *spool_errors)},
            parameters=[pref("jobId"), param("name", "path", {"type": "string", "minLength": 1},
                                             "a file name listed in the status's result.files"), pref("range")])},
        f"{API}/jobs/{{id}}/download": {"get": operation(
            "download", "The main result (the kind's main file, e.g. video.mp4)", "files",
            {**_file_responses("*/*"), **errors(404, *spool_errors)}, parameters=[pref("jobId"), pref("range")])},
        f"{API}/jobs/{{id}}/{PREVIEW_FILE}": {"get": operation(
            "getPreview", "A running job's live preview (the status's preview.url; SPEC §10.2)", "files",
            {"200": {"description": "the latest preview, JPEG (Cache-Control: no-store)", "content": {"image/jpeg": {}}},
             **errors(404, *spool_errors)}, parameters=[pref("jobId")],
            description="Replaced every [preview] every_steps denoising steps (rendered kinds: at most once a "
                        "second); 404 before the first, when previews are off, and once the attempt has ended.")},
        f"{API}/events": {"get": operation(
            "events", "Server-Sent Events of status changes", "events",
            {"200": {"description": _EVENTS_DOC, "content": {"text/event-stream": {"schema": ref("Event")}}},
             **errors(400)},
            parameters=[param("job", "query", {"type": "string", "pattern": JOB_ID_PATTERN}, "only this job's events"),
                        param("Last-Event-ID", "header", STR, "resume after this event id (`<run>-<n>`)")])},
        f"{API}/models": {"get": operation("listModels", "The model registry and where models are loaded", "models",
                                           ok("the models", obj({"models": array(ref("Model"))})))},
        f"{API}/models/{{name}}/load": {"post": operation(
            "loadModel", "Load a model on one worker (one that holds it already answers at once)", "models",
            {**ok("loading", ref("ModelLoading"), "202"), **errors(404, 503)},
            scope="submit", parameters=[pref("modelName")])},
        f"{API}/models/{{name}}/unload": {"post": operation(
            "unloadModel", "Unload a model from every worker holding it", "models",
            {**ok("unloading", ref("ModelUnloading"), "202"), **errors(404)},
            scope="submit", parameters=[pref("modelName")])},
        f"{API}/models/download": {"post": operation(
            "downloadModel", "Download a model from the Hugging Face hub into the hub cache, then register it",
            "models", {**ok("started (or the download of this repo that runs): poll GET /api/v1/models",
                            ref("Download"), "202"), **errors(400, 403, 409, 413, 429, 503, 507)},
            scope="submit", body={"required": True, "content": json_content(obj({
                "repo": {"type": "string", "description": "a hub model id, ORG/NAME"},
                "revision": {"type": "string", "default": "main", "description": "a branch, tag or commit"},
            }, ["repo"], closed=True))},
            description="In the background; the model list shows its state, bytes and error; registered as "
                        "the full repo id. Without tokens configured, only a repo matching [registry] "
                        "download_allow or a request with the operator key (`vidspool models download`) may "
                        "(403 `forbidden`). Refused with 413 `too_large` over [registry] max_download_bytes, "
                        "429 `too_many_downloads` at max_concurrent_downloads, 507 `insufficient_storage` when "
                        "the hub cache's disk cannot hold it, 503 `offline` on a host without the hub "
                        "(HF_HUB_OFFLINE=1).")},
        f"{API}/pause": {"post": operation(
            "pause", "Pause: no new claims (every host, or one); drops still queue", "daemon",
            {**ok("paused: what was written, and the pause this daemon now obeys", obj({
                "paused": ref("Paused"), "queue_paused": nullable(ref("Paused"))}, ["paused"])),
             **errors(400, 413, *spool_errors)},
            scope="submit", body=_optional_body(PauseRequest),
            description="Writes R/PAUSE (or hosts/<host>.pause): every daemon sharing the spool obeys it. "
                        "`now` requeues running jobs at their next step without counting the attempt.")},
        f"{API}/resume": {"post": operation(
            "resume", "Resume: lift the pause of one host, or (no host) every pause", "daemon",
            {**ok("the pause files removed, and the pause this daemon still obeys", obj({
                "removed": STR_LIST, "queue_paused": nullable(ref("Paused"))}, ["removed"])),
             **errors(400, 413, *spool_errors)},
            scope="submit", body=_optional_body(ResumeRequest))},
        f"{API}/voices": {"get": operation(
            "listVoices", "Voices a job may name: [voices.*] from config, then espeak-ng's", "speech",
            ok("the voices", obj({"voices": array(ref("Voice"))})),
            parameters=[param("language", "query", STR, "only voices of this language (e.g. de, en-us)")])},
        f"{API}/languages": {"get": operation(
            "listLanguages", "Languages, sorted by code, with how many voices speak each", "speech",
            ok("the languages", obj({"languages": array(obj({"code": STR, "voices": INT}))})))},
        f"{API}/openapi.json": {"get": operation("openapi", "This document", "daemon",
                                                 ok("OpenAPI 3.1", {"type": "object"}))},
    }


_EVENTS_DOC = (
    "An endless stream. Every status write is `event: status`, `id: <run>-<n>`, `data: <status JSON>`. "
    "A status write whose `preview.step` moved is followed by `event: preview`, data "
    "`{\"id\", \"url\", \"step\"}` (no id of its own). "
    "Reconnecting with Last-Event-ID replays the kept events after it (the last 10,000); an id the "
    "daemon no longer has gives `event: reset` (data `{}`): refetch /api/v1/jobs. `: keepalive` every 15 s.")


def _optional_body(model) -> dict:
    """A JSON body that may be left out (every field has its default)."""
    return {"required": False, "content": json_content(model.model_json_schema())}


def _file_responses(*media_types: str) -> dict:
    """What aiohttp's file responses can answer: the file, a range, and conditional answers."""
    binary = {m: {} for m in media_types}  # binary content: no JSON schema (OpenAPI 3.1)
    range_header = {"Content-Range": {"schema": STR, "description": "bytes start-end/size"}}
    return {
        "200": {"description": "the file (Content-Type: its media type)", "content": binary},
        "206": {"description": "the requested byte range", "headers": range_header, "content": binary},
        "304": {"description": "not modified (If-None-Match / If-Modified-Since)"},
        "412": {"description": "precondition failed (If-Match / If-Unmodified-Since)"},
        "416": {"description": "range not satisfiable (no body)",
                "headers": {"Content-Range": {"schema": STR, "description": "bytes */size"}}},
    }


def _submit_body() -> dict:
    return {
        "required": True,
        "description": (
            "The job file (SPEC §3) as JSON; or multipart/form-data with a `job` field holding it "
            "and the input files as file fields (their file names are what `inputs` names)."),
        "content": {
            "application/json": {"schema": ref("Job")},
            "multipart/form-data": {
                "schema": obj({"job": {**ref("Job"), "description": "the job file, as a JSON part"}},
                              additionalProperties={"type": "string", "contentMediaType": "application/octet-stream",
                                                    "description": "an input file"}),
                "encoding": {"job": {"contentType": "application/json"}},
            },
        },
    }


def _parameters() -> dict:
    return {
        "jobId": param("id", "path", {"type": "string", "pattern": JOB_ID_PATTERN}, "the job id"),
        "modelName": param("name", "path", {"type": "string", "minLength": 1}, "a model of the registry"),
        "state": param("state", "query", {"type": "string", "enum": list(STATES)}, "only jobs in this state"),
        "kind": param("kind", "query", STR, "only jobs of this kind"),
        "label": param("label", "query", {"type": "string", "pattern": "="}, "only jobs with this label: KEY=VALUE"),
        "limit": param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                       "page size"),
        "cursor": param("cursor", "query", STR, "the previous page's next_cursor: jobs after this id"),
        "range": param("Range", "header", STR, "a byte range, e.g. `bytes=0-1023`"),
    }


def _security_schemes() -> dict:
    return {
        "bearerAuth": {"type": "http", "scheme": "bearer",
                       "description": "`[api] tokens` / `tokens_file`; with none configured, no auth. Scopes: "
                                      "`read` (GETs, events, files, metrics), `submit` (POST, DELETE)."},
        "accessToken": {"type": "apiKey", "in": "query", "name": "access_token",
                        "description": "the same token as a query parameter, for EventSource and <video src>"},
    }


# -- errors ---------------------------------------------------------------------------
# status: (component name, codes, description)
ERROR_RESPONSES: dict[int, tuple[str, list[str], str]] = {
    400: ("BadRequest", ["bad_request", "invalid_job"], "the body is not a JSON object, or a bad query value"),
    401: ("Unauthorized", ["unauthorized"], "a token is missing or unknown"),
    403: ("Forbidden", ["forbidden"], "the token lacks the scope (downloads: no token and a repo not allowed)"),
    404: ("NotFound", ["not_found"], "no such job, file or model"),
    409: ("Conflict", ["conflict"], "the job has already ended, or a download of another revision runs"),
    413: ("TooLarge", ["too_large"], "a download over [registry] max_download_bytes, the job JSON over [limits] "
                                     "job_json_bytes, or an upload over input_bytes"),
    429: ("QueueFull", ["queue_full", "too_many_downloads"], "[api] max_queued_jobs jobs are waiting, or [registry] "
                                                          "max_concurrent_downloads downloads run; try again later"),
    503: ("Unavailable", ["spool_unavailable", "unavailable", "offline"],
          "the spool is unavailable, no worker is running, or this host is offline (downloads)"),
    507: ("InsufficientStorage", ["insufficient_storage"], "the spool is full, or the hub cache's disk cannot hold a download"),
}


def _error_responses(settings) -> dict:
    out = {}
    for status, (name, codes, description) in ERROR_RESPONSES.items():
        if status == 413:
            description += (f" ({settings.limits.job_json_bytes} and {settings.limits.input_bytes} bytes here)")
        schema = {"allOf": [ref("Error")],
                  "properties": {"error": {"properties": {"code": {"enum": codes}}}}}
        response: dict = {"description": description, "content": json_content(schema)}
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": STR, "description": 'Bearer realm="vidspool"'}}
        if status == 429:
            response["headers"] = {"Retry-After": {"schema": INT, "description": "seconds"}}
        out[name] = response
    return out


# -- schemas --------------------------------------------------------------------------
def _schemas() -> dict:
    return {
        "Error": obj({"error": obj({"code": STR, "message": STR}, closed=True)}, closed=True),
        "Health": obj({"status": {"type": "string", "enum": ["ok", "unavailable"]},
                       "corrupt": {"type": "integer", "minimum": 0, "description": "entries in corrupt/"},
                       "reason": {"type": "string", "description": "why not ok (503 only)"},
                       "paused": {**ref("Paused"), "description": "present while paused (still healthy)"}}, ["status"]),
        "Paused": obj({"scope": {"type": "string", "enum": ["all", "host"]}, "host": nullable(STR),
                       "now": BOOL, "free_memory": BOOL, "by": nullable(STR), "reason": nullable(STR),
                       "since": nullable(STR)}, ["scope"], description="a pause (SPEC §10.4)"),
        **status_document.schemas(REF + "{model}"),  # Status, Result, ResultFile, StatusError, ErrorCode
        "JobSummary": _job_summary_schema(),
        "JobList": obj({"jobs": array(ref("JobSummary")),
                        "next_cursor": {**nullable(STR), "description": "pass as `cursor` for the next page"}}),
        "Submitted": obj({"id": STR, "state": {"const": "submitted"}, "status_url": STR}),
        "Canceled": obj({"id": STR, "state": {"type": "string", "enum": ["canceling", "canceled"]}}),
        "ResultsDeleted": obj({"id": STR, "state": {"type": "string", "enum": ["deleted", "already_deleted"]},
                               "freed_bytes": INT}),
        "Stats": obj({k: {"type": "object"} for k in ("requests", "generation", "queue", "storage", "models")},
                     description="figures from the outbox; seconds and bytes, null where there is no history"),
        "Device": _device_schema(),
        "Queue": obj({"paused": nullable(ref("Paused")), "devices": array(ref("Device")),
                      "queued": array(obj({"id": STR, "priority": INT, "position": {"type": "integer", "minimum": 1}}))}),
        "Info": _info_schema(),
        "Model": _model_schema(),
        "Download": _download_schema(),
        "Voice": _voice_schema(),
        "ModelLoading": obj({"model": STR, "device": STR, "state": {"const": "loading"}}),
        "ModelUnloading": obj({"model": STR, "devices": STR_LIST, "state": {"const": "unloading"}}),
        "Event": obj({"event": {"type": "string", "enum": ["status", "reset"]},
                      "id": {"type": "string", "description": "`<run>-<n>`"},
                      "data": {"type": "string", "contentMediaType": "application/json",
                               "description": "the status document (Status) as JSON; `{}` for reset"}},
                     ["event", "data"], description="one event of the stream"),
    }


def _job_summary_schema() -> Schema:
    """A job in GET /jobs: the status's LIST_FIELDS, described as in Status."""
    status = status_document.schemas(REF + "{model}")["Status"]["properties"]
    return obj({name: status[name] for name in LIST_FIELDS}, description="the status, shortened")


def _device_schema() -> Schema:
    memory = obj({"used": INT, "total": INT, "peak_allocated": INT}, ["used", "total"])
    return obj({
        "device": STR, "pid": nullable(INT), "alive": BOOL, "ready": BOOL, "busy": BOOL, "job": nullable(STR),
        "restarts": INT, "jobs_done": INT, "models": {**STR_LIST, "description": "loaded, most recently used first"},
        "model_loads": INT, "loading": STR_LIST,
        "memory": {**nullable(memory), "description": "GPU memory, or RAM (used: this worker); null until measured"},
        "models_bytes": INT, "model_budget_bytes": nullable(INT),
    })


def _info_schema() -> Schema:
    return obj({
        "version": STR, "host": STR, "spool": STR, "devices": STR_LIST, "kinds": STR_LIST,
        "kind_inputs": {"type": "object", "additionalProperties": STR_LIST, "description": "input names per kind"},
        "models": STR_LIST,
        "presets": {"type": "object", "additionalProperties": obj({"kind": nullable(STR), "accept": STR_LIST})},
        "limits": obj({"job_json_bytes": INT, "input_bytes": INT, "max_attempts": INT, "max_frame_pixels": INT}),
        "auth": {"type": "boolean", "description": "whether tokens are required"},
    })


def _voice_schema() -> Schema:
    return obj({
        "id": {**STR, "description": "what a job passes as `voice`"}, "name": STR, "language": STR,
        "engine": {"type": "string", "enum": ["espeak", "coqui"]}, "gender": nullable(STR),
        "configured": {**BOOL, "description": "from [voices.*] in config"},
        "cloning": {**BOOL, "description": "clones a reference recording"},
    })


def _model_schema() -> Schema:
    s_or_null = nullable(STR)
    return obj({
        "name": STR, "path": s_or_null, "repo": s_or_null, "kinds": STR_LIST, "pipeline": s_or_null,
        "backend": {**s_or_null, "description": "wav2lip or musetalk for a talking-head lip-sync model"},
        "dtype": {"type": "string", "enum": ["auto", "float32", "float16", "bfloat16"]},
        "offload": {"type": "string", "enum": ["none", "model", "sequential"]},
        "defaults": {"type": "object"}, "folder": s_or_null, "available": BOOL,
        "problem": {**s_or_null, "description": "why it is not available"},
        "loaded_on": STR_LIST, "loading_on": STR_LIST,
        "download": {**nullable(ref("Download")), "description": "this daemon's hub download of it, if any"},
    })


def _download_schema() -> Schema:
    return obj({
        "repo": STR, "revision": STR, "name": {**STR, "description": "the model name it is registered as"},
        "state": {"type": "string", "enum": ["downloading", "downloaded", "failed"]},
        "bytes_done": INT, "bytes_total": nullable(INT), "error": nullable(STR),
        "folder": {**nullable(STR), "description": "the snapshot folder in the hub cache"},
        "started_at": NUM, "finished_at": nullable(NUM),
    }, description="a hub download (unix seconds)")


# -- the job file and the kinds -------------------------------------------------------
def _job_schemas(kinds: dict, settings) -> dict:
    """`Job` (the job file, SPEC §3) with one variant per kind, picked by `kind`; each kind's
    params schema comes from its pydantic model (`Params.<kind>`, nested models under it)."""
    schemas: dict = {"Job": _job_schema(kinds)}
    for name, kind in sorted(kinds.items()):
        params, defs = _params_schema(name, kind, settings)
        schemas.update(defs)
        schemas[f"Params.{name}"] = params
        inputs = _inputs_schema(kind)
        required = ["kind"] + (["params"] if params.get("required") else []) + (["inputs"] if inputs["required"] else [])
        schemas[f"Job.{name}"] = obj({
            "kind": {"const": name},
            "params": ref(f"Params.{name}"),
            "inputs": inputs,
        }, required, description=kind.description or f"a {name} job")
    return schemas


def _job_schema(kinds: dict) -> Schema:
    names = sorted(kinds)
    schema = obj({
        "version": {"const": 1},
        "id": {**nullable({"type": "string", "pattern": JOB_ID_PATTERN}),
               "description": "default: from the file name (API: a fresh one); taken ids get a suffix"},
        "kind": {"type": "string", "enum": names},
        "model": {**nullable({"type": "string", "minLength": 1}), "description": "a model of the registry"},
        "priority": {"type": "integer", "minimum": -100, "maximum": 100, "default": 0},
        "params": {"type": "object", "description": "the kind's params (Params.<kind>)"},
        "inputs": {"type": "object", "additionalProperties": {"anyOf": [STR, STR_LIST]},
                   "description": "input name → file name(s) beside the job file"},
        "max_attempts": nullable({"type": "integer", "minimum": 1, "maximum": 100}),
        "labels": {"type": "object", "additionalProperties": STR},
        "webhook": {**nullable(WebhookTarget.model_json_schema()),
                    "description": "where state changes are POSTed, signed (SPEC §10.1); the URL must start with "
                                   "one of [webhooks] allowed_urls"},
    }, ["kind"], closed=True, description="the job file (SPEC §3)")
    if names:
        schema["oneOf"] = [ref(f"Job.{n}") for n in names]
        schema["discriminator"] = {"propertyName": "kind", "mapping": {n: REF + f"Job.{n}" for n in names}}
    return schema


def _inputs_schema(kind) -> Schema:
    return obj({i.name: (STR if not i.many else {"anyOf": [STR, STR_LIST]}) for i in kind.inputs},
               [i.name for i in kind.inputs if i.required], closed=True)


def _params_schema(name: str, kind, settings) -> tuple[Schema, dict]:
    """The kind's pydantic params schema as a job may give it: keys the config fills in
    ([kinds.KIND] or model defaults) are not required, and kinds with a model take
    `params.model` too. Returns (schema, nested definitions renamed under Params.<kind>.)."""
    prefix = f"Params.{name}."
    schema = copy.deepcopy(kind.params.model_json_schema(ref_template=REF + prefix + "{model}"))
    defs = {prefix + k: v for k, v in schema.pop("$defs", {}).items()}
    supplied = set(_configured_defaults(name, settings))
    if "required" in schema:
        schema["required"] = [k for k in schema["required"] if k not in supplied]
        if not schema["required"]:
            del schema["required"]
    if kind.uses_model:
        schema.setdefault("properties", {})["model"] = {"type": "string", "description": "the same as the job's model"}
    schema["description"] = " ".join(x for x in (
        schema.get("description"), "Config defaults and the model's defaults fill in what is left out.") if x)
    return schema, defs


def _configured_defaults(kind_name: str, settings) -> dict:
    kind_cfg = settings.kinds.get(kind_name)
    out = dict(kind_cfg.defaults) if kind_cfg else {}
    for model in settings.models.values():
        if not model.kinds or kind_name in model.kinds:
            out.update(model.defaults)
    return out

