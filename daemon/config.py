"""Configuration: config.toml + VIDSPOOL_<SECTION>__<KEY> environment, validated by pydantic."""

from __future__ import annotations

import re
import socket
import tomllib
import typing
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from contract.acceleration import Accelerate, Dtype, calibration_file, check_dtype_table
from contract.voices import VoiceBook
from daemon.bucket.location import BucketLocation, is_bucket_url, parse_bucket_url
from daemon.registry import FoundModel, discover_models

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
CONFIG_NAME = "config.toml"


def find_config(given: Path | None) -> Path | None:
    """The config file a command reads: `given`, else config.toml in the current folder,
    else the install's; None when there is none (defaults and the environment only)."""
    if given is not None:
        return given
    return next((p for p in (Path.cwd() / CONFIG_NAME, DEFAULT_CONFIG) if p.is_file()), None)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# A daemon's name ([spool] host): hosts/<host>.json, active/<host>/.
HOST_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class SpoolConfig(Section):
    # A folder, or "s3://BUCKET/PREFIX" for a bucket spool (SPEC §12, [s3]).
    root: Path | BucketLocation = Path("spool")
    host: str = Field(default_factory=socket.gethostname, pattern=HOST_PATTERN)
    stable_seconds: float = Field(3.0, gt=0)
    rescan_seconds: float = Field(2.0, gt=0)
    lease_seconds: float = Field(30.0, gt=0)
    heartbeat_seconds: float = Field(3.0, gt=0)
    # A dropped NAME.json whose inputs are not there yet waits this long, then fails missing_input.
    input_wait_seconds: float = Field(10.0, ge=0)
    # Spool group for shared installs (vidspool init); empty keeps the user's group.
    group: str = ""
    # Several daemons on this spool? auto: allowed where the filesystem gives exclusive
    # claims; on one that does not (rclone), only while no other daemon is seen.
    shared: Literal["auto"] | bool = "auto"
    # Another mount of the same spool folder, for doctor to measure how late files show.
    probe_path: Path | None = None

    @field_validator("root", mode="before")
    @classmethod
    def _bucket_root(cls, v):
        return parse_bucket_url(v) if is_bucket_url(v) else v


class S3Config(Section):
    """[s3]: how a bucket spool ([spool] root = "s3://BUCKET/PREFIX") reaches its server.
    Credentials come from the standard AWS chain (environment, AWS_PROFILE or `profile`
    with ~/.aws/credentials and ~/.aws/config, SSO, container and instance roles)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    endpoint_url: str = ""
    """Empty: AWS S3 in `region`; else the server's URL, e.g. "http://127.0.0.1:8333"
    (SeaweedFS, MinIO, R2 …)."""
    region: str = ""
    """Empty: the standard AWS configuration's (AWS_REGION, the profile's), else us-east-1."""
    profile: str = ""
    """A named profile of ~/.aws/config and ~/.aws/credentials; empty: AWS_PROFILE's, else
    the default chain."""
    allow_http: bool = False
    """An http:// endpoint_url (no TLS: requests and media cross the network readable) is
    refused unless this is true; for a server on loopback or a trusted network."""
    poll_seconds: float = Field(2.0, gt=0)
    """How often each daemon lists inbox/ and the queue."""
    presign_seconds: int = Field(0, ge=0, le=7 * 24 * 3600)
    """Downloads through the API answer with a redirect to a presigned URL valid this long;
    0: the daemon streams them from the bucket."""
    connect_timeout_seconds: float = Field(3.0, gt=0, le=60)
    """A connection to the server not made within this fails the request (the daemon tries
    again on its next turn)."""
    request_timeout_seconds: float = Field(10.0, gt=0, le=300)
    """Every request but a media transfer must be answered in full within this."""
    transfer_timeout_seconds: float = Field(600.0, gt=0)
    """One media transfer request (a whole download, an upload or one part of it) within this;
    a download that receives nothing for request_timeout_seconds is cut sooner."""
    part_mib: int = Field(16, ge=5, le=5120)
    """A file larger than this many MiB is uploaded in parts of this size, several at once
    (S3's multipart upload; at most 10,000 parts)."""

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v):
        if v:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
                raise ValueError(f"{v!r} is not a server URL; use scheme://host[:port], e.g. https://s3.example.org")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _http_allowed(self):
        if self.endpoint_url.startswith("http://") and not self.allow_http:
            raise ValueError(f"endpoint_url {self.endpoint_url} is plain http (no TLS); set allow_http = true to use it")
        return self


class WorkersConfig(Section):
    devices: Literal["auto"] | list[str] = "auto"
    cpu_workers: int = Field(1, ge=1, le=64)
    drain_seconds: float = Field(30.0, ge=0)
    job_timeout_seconds: float = Field(3600.0, gt=0)
    # A running job's worker that sends neither progress nor a heartbeat (every 2 s, from a
    # thread of its own) this long is hung: it is killed and the attempt retried.
    stall_seconds: float = Field(120.0, ge=5)
    restart_backoff_seconds: float = Field(1.0, ge=0)
    # Local folder where workers make results before delivering them into the spool
    # (in a sub-folder per host and spool); default: <temp dir>/vidspool.
    scratch_dir: Path | None = None
    # Loaded models a worker keeps warm, in GiB; least recently used ones are unloaded to
    # make room. auto: 90 % of the worker's GPU, or a quarter of RAM on a CPU worker.
    model_memory_gb: Literal["auto"] | float = "auto"
    # Compiled code of models with accelerate.compile, per model, torch version and device,
    # kept across worker restarts; default: ~/.cache/vidspool/compile.
    compile_cache_dir: Path | None = None

    @field_validator("model_memory_gb")
    @classmethod
    def _positive_budget(cls, v):
        if v != "auto" and v <= 0:
            raise ValueError("must be > 0 or \"auto\"")
        return v

    @field_validator("devices")
    @classmethod
    def _devices_known(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("empty device list; use \"auto\" or e.g. [\"cpu\"]")
            for d in v:
                if d != "cpu" and not (d.startswith("cuda:") and d[5:].isdigit()):
                    raise ValueError(f"unknown device {d!r}; use \"cpu\" or \"cuda:N\"")
        return v


class LimitsConfig(Section):
    job_json_bytes: int = Field(1_000_000, gt=0)
    input_bytes: int = Field(2_000_000_000, gt=0)
    # One form request (multipart or url-encoded): its fields and files (each costs the
    # parser about a millisecond), and the bytes of its text fields together (never less
    # than job_json_bytes; each field is under that too).
    form_fields: int = Field(200, gt=0)
    form_bytes: int = Field(1_000_000, gt=0)
    max_attempts: int = Field(3, ge=1, le=100)
    # frames × width × height for any video a job asks for.
    max_frame_pixels: int = Field(4096 * 2160 * 600, gt=0)


class StatusConfig(Section):
    # Progress-only status writes per job are at most this often; state changes are immediate.
    progress_interval_seconds: float = Field(0.5, ge=0)


def _is_loopback_host(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


class TokenConfig(Section):
    token: str = Field(min_length=16)
    scopes: list[Literal["read", "submit"]] = ["read", "submit"]


class ApiConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Bearer tokens: a string has every scope; {token, scopes} limits one to read or submit.
    tokens: list[str | TokenConfig] = []
    # One token per line, optional scopes after it ("t0ken read"); # comments.
    tokens_file: Path | None = None
    # Serve a non-loopback address without tokens (anyone who reaches it may submit).
    allow_unauthenticated: bool = False
    # POST /jobs answers 429 while this many jobs wait in the queue.
    max_queued_jobs: int = Field(100_000, ge=1)
    # Names clients may use for the daemon besides the listen host and loopback names (a
    # request with any other Host is refused: DNS rebinding), e.g. ["gpu1.example.org"].
    allowed_hosts: list[str] = []
    # Origins of a separate web front-end that may call the API from a browser (CORS), e.g.
    # ["https://dashboard.example.org"]; other sites' pages may not change anything.
    allowed_origins: list[str] = []
    # A request head must arrive, and an idle keep-alive connection ends, within this; a
    # request body may pause no longer than this between two chunks.
    read_timeout_seconds: float = Field(15.0, gt=0, le=300)
    # Open connections beyond this are answered 503 and closed (lowered at start so that
    # they cannot use up the file descriptors spool work needs).
    max_connections: int = Field(512, ge=1)
    # Open GET /api/v1/events streams beyond this are answered 503.
    max_event_streams: int = Field(64, ge=1)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v):
        for origin in v:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
                raise ValueError(f"{origin!r} is not an origin; use scheme://host[:port], e.g. https://app.example.org")
        return v

    @model_validator(mode="after")
    def _remote_needs_tokens(self):
        if self.enabled and not _is_loopback_host(self.host) and not (self.tokens or self.tokens_file) and not self.allow_unauthenticated:
            raise ValueError(
                f"binding {self.host} (not loopback) needs [api] tokens or tokens_file; "
                "set allow_unauthenticated = true to serve it without")
        if self.tokens_file is not None and not Path(self.tokens_file).is_file():
            raise ValueError(f"tokens_file {self.tokens_file} does not exist")
        return self


WEBHOOK_EVENTS = ("queued", "running", "progress", "completed", "failed", "canceled")
WebhookEvent = Literal["queued", "running", "progress", "completed", "failed", "canceled"]
# What a job tells a client that names none: how it ended.
DEFAULT_WEBHOOK_EVENTS: list[str] = ["completed", "failed", "canceled"]


def check_http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


class WebhookTarget(Section):
    """Where a job's state changes are POSTed (SPEC §10.1)."""

    url: str
    events: list[WebhookEvent] = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS), min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, v):
        return check_http_url(v)


class WebhooksConfig(Section):
    # The Standard Webhooks signing key, "whsec_" + base64 (never in a job file).
    secret: str = ""
    # Jobs that name no webhook (and whose preset names none) report here.
    default: WebhookTarget | None = None
    # URL prefixes a job file may name ("https://hooks.example.org/"); empty: a job file may
    # name none (presets and this section still may). A loopback or private address is
    # allowed only where a prefix names it explicitly ("http://127.0.0.1:9000/hooks/").
    allowed_urls: list[str] = []
    # `progress` events of one job at most this often.
    progress_seconds: float = Field(10.0, ge=0)
    # An attempt that has not got its answer this long after it began is cut (wall clock, however
    # slowly the receiver trickles) and retried.
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    # Attempts to one receiver (host and port) at once; more wait their turn, other receivers' do not.
    max_per_host: int = Field(2, ge=1, le=64)
    # Attempts per event; the wait doubles from retry_seconds (5 s, 10 s … capped at 1 h).
    max_attempts: int = Field(10, ge=1, le=100)
    retry_seconds: float = Field(5.0, gt=0)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v):
        if v:
            import base64
            import binascii

            if not v.startswith("whsec_"):
                raise ValueError("must be a Standard Webhooks key: \"whsec_\" + base64 (e.g. from `openssl rand -base64 32`)")
            try:
                if not base64.b64decode(v[len("whsec_"):] + "==", validate=False):
                    raise ValueError("the key after \"whsec_\" is empty")
            except binascii.Error:
                raise ValueError("the key after \"whsec_\" is not base64") from None
        return v

    @field_validator("allowed_urls")
    @classmethod
    def _prefixes(cls, v):
        # "https://" alone: any https URL, public addresses only (daemon/webhooks/urls.py).
        return [u if u in ("http://", "https://") else check_http_url(u) for u in v]


class PreviewConfig(Section):
    # A running video job writes outbox/<id>/preview.jpg every this many denoising steps (0: off).
    every_steps: int = Field(5, ge=0)
    # The preview's longer side in pixels at most.
    max_side: int = Field(512, ge=16, le=4096)


class OutboxConfig(Section):
    # Ended jobs' outbox folders older than this many days are removed (unset: kept forever).
    keep_days: float | None = Field(None, gt=0)
    # How often a daemon looks for folders past keep_days.
    sweep_seconds: float = Field(3600.0, gt=0)


DELIVERY_PLACEHOLDERS = frozenset({"stem", "id", "kind", "date", "ext", "result"})


class PresetConfig(Section):
    # Left out: the job's (or the personality's) kind; a preset taking bare files needs one.
    kind: str | None = None
    # Bare files matching these globs, dropped in inbox/<preset>/, become jobs.
    accept: list[str] = []
    # Which input (or text param) a bare file becomes; default: the kind's first input.
    accept_as: str | None = None
    model: str | None = None
    priority: int = Field(0, ge=-100, le=100)
    params: dict[str, Any] = {}
    labels: dict[str, str] = {}
    # The preset's jobs report here unless the job file names its own webhook.
    webhook: WebhookTarget | None = None
    # After completion the main result (deliver = "all": every result) is copied into this
    # folder (a share too), named by `name`: {stem} (the drop's name), {id}, {kind}, {date}
    # (YYYY-MM-DD), {ext}, {result} (the result's own name, e.g. "video"); never overwriting.
    deliver_to: Path | None = None
    name: str | None = None
    deliver: Literal["main", "all"] = "main"
    # A failed delivery is retried after this many seconds, doubling up to an hour.
    deliver_retry_seconds: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _bare_files_need_a_kind(self):
        if self.accept and self.kind is None:
            raise ValueError("kind: required with accept (the kind of job a bare file becomes)")
        return self

    @field_validator("name")
    @classmethod
    def _name_template(cls, v):
        if v is None:
            return v
        import string

        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as exc:
            raise ValueError(f"bad template {v!r}: {exc}") from None
        unknown = fields - DELIVERY_PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {{stem}} {{id}} {{kind}} {{date}} {{ext}} {{result}}")
        if "/" in v or "\\" in v or v.startswith(".") or not v.strip():
            raise ValueError(f"{v!r} must be a plain file name (no folders, not starting with '.')")
        return v


class KindConfig(Section):
    model: str | None = None
    defaults: dict[str, Any] = {}


class ModelConfig(Section):
    # Exactly one of: a local folder, or a hub id resolved from the local cache only.
    path: Path | None = None
    repo: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    revision: str = "main"
    # The kinds it serves; empty: every kind its pipeline family can do.
    kinds: list[str] = []
    # A diffusers class name ("WanPipeline") or "module:Class"; default: model_index.json's.
    pipeline: str | None = None
    # A lip-sync model for talking-head instead of a diffusers folder; default: told by the
    # folder's layout (contract/lipsync_folders.py).
    backend: Literal["wav2lip", "musetalk"] | None = None
    # One dtype, or a table per component (transformer, vae, text_encoder, ...; `default` for
    # the rest). Components left out take their family's recommendation (contract/families.py).
    dtype: Dtype | dict[str, str] = "auto"
    # Compile, attention backend and step cache (SPEC §11, contract/acceleration.py).
    accelerate: Accelerate = Accelerate()
    offload: Literal["none", "model", "sequential"] = "none"
    vae_tiling: bool = False
    vae_slicing: bool = False
    # frames × width × height this model may be asked for (refused before loading).
    max_frame_pixels: int | None = Field(None, gt=0)
    defaults: dict[str, Any] = {}

    @field_validator("dtype")
    @classmethod
    def _dtype_table(cls, v):
        check_dtype_table(v)
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.repo is None):
            raise ValueError("set exactly one of path (a local folder) or repo (a hub id in the local cache)")
        return self


class VoiceConfig(Section):
    # espeak: `voice` is an espeak-ng voice ("en-us", "de+f3"); coqui: `model` is a coqui
    # model folder (config.json + checkpoint), `speaker` one of its speakers, and
    # `reference_audio` a recording to clone (cloning-capable models).
    engine: Literal["espeak", "coqui"] = "espeak"
    voice: str | None = None
    model: Path | None = None
    speaker: str | None = None
    language: str = "en"
    reference_audio: Path | None = None
    speed: float = Field(1.0, gt=0.25 - 1e-9, le=4)
    description: str = ""

    @model_validator(mode="after")
    def _engine_needs(self):
        if self.engine == "coqui" and self.model is None:
            raise ValueError("a coqui voice needs model (the model folder)")
        return self


class RegistryConfig(Section):
    # Every sub-folder holding a model_index.json is a model named after the folder
    # (`vidspool models import` copies downloads here); [models.NAME] entries win.
    dir: Path = Path("models")
    # Hub repos any caller of a front may download (glob patterns, e.g. "Wan-AI/*"); others
    # need a token with the submit scope, or the operator key (`vidspool models download`).
    download_allow: list[str] = []
    # Hub downloads running at once, and bytes of one download (the hub's file sizes).
    max_concurrent_downloads: int = Field(2, ge=1)
    max_download_bytes: int = Field(200 * 10**9, gt=0)
    # A failed download stays listed this long, and only the newest this many.
    failed_downloads_keep_seconds: float = Field(3600.0, gt=0)
    failed_downloads_kept: int = Field(20, ge=0)

    @field_validator("download_allow")
    @classmethod
    def _repo_patterns(cls, v):
        for pattern in v:
            if not re.fullmatch(r"[A-Za-z0-9._*?\[\]!-]+/[A-Za-z0-9._*?\[\]!-]+", pattern):
                raise ValueError(f"{pattern!r} is not a repo pattern: ORG/NAME with * ? [..], e.g. \"Wan-AI/*\"")
        return v


def split_listen(value: str) -> tuple[str, int]:
    """"HOST:PORT" or "[V6]:PORT" → (host, port); ValueError names the problem."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen {value!r} must be HOST:PORT, e.g. 127.0.0.1:8002 (port 0: any free one)")
    return host, int(port)


class CompatConfig(Section):
    """[compat.NAME]: one seed service's API served on its own port (SPEC §9)."""

    # "HOST:PORT"; unset: this personality is off.
    listen: str | None = None
    # A [presets.X] whose model, params and labels its jobs get (the kind stays the seed's).
    preset: str | None = None
    # On a non-loopback address: serve it without tokens (anyone who reaches it may submit).
    allow_unauthenticated: bool = False
    # Require [api] tokens as `Authorization: Bearer` (Visualizr always does when tokens exist).
    require_tokens: bool = False
    # talking-head seeds: the face used when a request brings none.
    default_face: Path | None = None
    # A voice name ([voices.*] or an espeak voice) for the jobs that speak; default: the kind's.
    voice: str | None = None
    # Visualizr `style` → words added to the prompt; a style not listed is ignored (and said so).
    styles: dict[str, str] = {}
    # Wan: jobs of this personality queued or running at once; more are answered 429.
    max_concurrent: int | None = Field(None, ge=1)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v):
        if v is not None:
            split_listen(v)
        return v

    @property
    def address(self) -> tuple[str, int] | None:
        return split_listen(self.listen) if self.listen else None


class CompatSection(Section):
    heygem: CompatConfig = CompatConfig()
    story: CompatConfig = CompatConfig()
    paksatalker: CompatConfig = CompatConfig()
    visualizr: CompatConfig = CompatConfig()
    wan: CompatConfig = CompatConfig()

    def enabled(self) -> dict[str, CompatConfig]:
        return {name: c for name in type(self).model_fields if (c := getattr(self, name)).listen}


class CharacterConfig(Section):
    """[characters.ID]: a character for Visualizr's character animation (image-to-video)."""

    image: Path
    # Filled from the request: {action} {emotion} {background} {animation_style}.
    prompt: str = "{action}, {emotion}, {background}, {animation_style}"
    model: str | None = None
    name: str = ""

    @field_validator("prompt")
    @classmethod
    def _template(cls, v):
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        unknown = fields - {"action", "emotion", "background", "animation_style"}
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {{action}} {{emotion}} {{background}} {{animation_style}}")
        return v


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIDSPOOL_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    spool: SpoolConfig = SpoolConfig()
    workers: WorkersConfig = WorkersConfig()
    limits: LimitsConfig = LimitsConfig()
    status: StatusConfig = StatusConfig()
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()
    presets: dict[str, PresetConfig] = {}
    kinds: dict[str, KindConfig] = {}
    models: dict[str, ModelConfig] = {}
    registry: RegistryConfig = RegistryConfig()
    voices: dict[str, VoiceConfig] = {}
    compat: CompatSection = CompatSection()
    characters: dict[str, CharacterConfig] = {}
    webhooks: WebhooksConfig = WebhooksConfig()
    preview: PreviewConfig = PreviewConfig()
    outbox: OutboxConfig = OutboxConfig()
    s3: S3Config = S3Config()
    # Names of the [models.*] entries (config or environment), which a registry rescan never
    # replaces or drops; None: not built by load_settings, so every entry counts as one.
    _configured_models: frozenset[str] | None = PrivateAttr(None)

    @staticmethod
    def registered(found: Mapping[str, FoundModel]) -> dict[str, ModelConfig]:
        """Folders found in [registry] dir (daemon/registry.py) as model entries."""
        return {name: ModelConfig(path=f.path, kinds=list(f.kinds), **({"backend": f.backend} if f.backend else {}))
                for name, f in found.items()}

    @property
    def configured_models(self) -> frozenset[str]:
        """The [models.*] names, as opposed to folders found in [registry] dir."""
        return frozenset(self.models) if self._configured_models is None else self._configured_models

    @property
    def bucket(self) -> BucketLocation | None:
        """The bucket of a bucket spool ([spool] root = "s3://…"); None for a folder spool."""
        root = self.spool.root
        return root if isinstance(root, BucketLocation) else None

    def voice_configs(self) -> dict[str, dict]:
        """[voices.*] as the plain dicts a VoiceBook (and a worker's run message) takes."""
        return {name: v.model_dump(mode="json") for name, v in self.voices.items()}

    def voice_book(self) -> VoiceBook:
        """The voices a job may name: [voices.*], and coqui folders by path inside [registry] dir."""
        return VoiceBook.from_config(self.voice_configs(), [str(self.registry.dir)])

    @model_validator(mode="after")
    def _compat_checks(self):
        tokens = bool(self.api.tokens or self.api.tokens_file)
        for name, c in self.compat.enabled().items():
            host, _ = c.address
            if c.preset is not None and c.preset not in self.presets:
                raise ValueError(f"compat.{name}.preset: no [presets.{c.preset}]")
            if c.require_tokens and not tokens:
                raise ValueError(f"compat.{name}.require_tokens needs [api] tokens or tokens_file")
            guarded = c.require_tokens or (name == "visualizr" and tokens)
            if not _is_loopback_host(host) and not guarded and not c.allow_unauthenticated:
                raise ValueError(
                    f"compat.{name}.listen {c.listen} is not loopback: set require_tokens = true (with [api] tokens) "
                    "or allow_unauthenticated = true to serve it without")
        listens = [(self.api.host, self.api.port)] if self.api.enabled else []
        for name, c in self.compat.enabled().items():
            if c.address[1] and c.address in listens:
                raise ValueError(f"compat.{name}.listen {c.listen} is already in use by another listener (e.g. [api] port 8080)")
            listens.append(c.address)
        return self

    @model_validator(mode="after")
    def _webhooks_signed(self):
        named = ["[webhooks] default"] if self.webhooks.default else []
        named += [f"[presets.{n}] webhook" for n, p in self.presets.items() if p.webhook]
        if named and not self.webhooks.secret:
            raise ValueError(f"webhooks.secret: {named[0]} needs [webhooks] secret (\"whsec_\" + base64) to sign deliveries")
        return self

    @field_validator("presets")
    @classmethod
    def _preset_names(cls, v):
        for name in v:
            if not name or name.startswith(".") or "/" in name or name in ("..",):
                raise ValueError(f"bad preset name {name!r}")
        return v

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_data = init_settings.init_kwargs.pop("_toml_data", None)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_data is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=toml_data))
        return tuple(sources)


class ConfigError(Exception):
    """A bad configuration: one message naming the key."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Loads config.toml (or `config_file`), then the environment on top of it."""
    path = Path(config_file) if config_file else DEFAULT_CONFIG
    if config_file and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        toml_data = read_config_file(path) if path.is_file() else None
        settings = Settings(_toml_data=toml_data, **overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"config {path}")) from None
    except (OSError, ValueError) as exc:  # unreadable, or a TOML syntax error
        raise ConfigError(f"config {path}: {exc}") from None
    settings._configured_models = frozenset(settings.models)
    settings.models = {**settings.registered(discover_models(settings.registry.dir)), **settings.models}
    attach_calibrations(settings, path.resolve().parent)
    return settings


def attach_calibrations(settings: Settings, config_dir: Path) -> None:
    """MagCache ratios from `vidspool models calibrate NAME` for caches that give none."""
    import json

    for name, model in settings.models.items():
        cache = model.accelerate.cache
        if cache is None or cache.kind != "magcache" or cache.mag_ratios is not None:
            continue
        path = calibration_file(config_dir, name)
        try:
            ratios = json.loads(path.read_text(encoding="utf-8"))["mag_ratios"]
            cache.mag_ratios = [float(r) for r in ratios]
        except FileNotFoundError:
            continue  # doctor and the load say to calibrate
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"models.{name}.accelerate.cache: {path} is not a calibration file ({exc}); "
                              f"run `vidspool models calibrate {name}` again") from None


def read_config_file(path: Path) -> dict:
    """The TOML document at `path`, its relative paths made relative to the file's folder
    (so the config works from any working directory; environment values are left as given)."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return resolve_paths(Settings, data, Path(path).resolve().parent)


def resolve_paths(model: type[BaseModel], data: dict, base: Path) -> dict:
    """`data` for `model` with every Path field's relative value joined to `base`, recursing
    into sections and NAME tables ([models.NAME], [voices.NAME])."""
    out = dict(data)
    for name, field in model.model_fields.items():
        value = out.get(name)
        annotation = field.annotation
        if isinstance(value, str) and value and _is_path(annotation) and not is_bucket_url(value):
            out[name] = str(base / Path(value).expanduser())  # an absolute value stays as it is
        elif isinstance(value, dict) and (section := _model_in(annotation)) is not None:
            out[name] = resolve_paths(section, value, base)
        elif isinstance(value, dict) and (table := _table_of(annotation)) is not None:
            out[name] = {k: resolve_paths(table, v, base) if isinstance(v, dict) else v for k, v in value.items()}
    return out


def _is_path(annotation) -> bool:
    return annotation is Path or Path in typing.get_args(annotation)


def _model_in(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _table_of(annotation) -> type[BaseModel] | None:
    """The model of a `dict[str, Model]` field, else None."""
    if typing.get_origin(annotation) is not dict:
        return None
    return _model_in(typing.get_args(annotation)[1])


def format_validation_error(exc: ValidationError, what: str, prefix: str = "") -> str:
    """One line naming each offending key path, e.g. `job: params.fps: ...`."""
    lines = []
    for err in exc.errors():
        key = prefix + (".".join(str(p) for p in err["loc"]) or "(top level)")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key}: {msg}")
    return f"{what}: " + "; ".join(lines)
