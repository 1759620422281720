"""The seed personalities (SPEC §9, design: docs/compat.md): each configured
`[compat.NAME] listen` serves that seed's API from its own module here, as one aiohttp
application and site on the daemon's loop, sharing the native API's read model and checks.
"""

from __future__ import annotations

import importlib

import structlog
from aiohttp import web

from daemon.http.compat.front import BadRequest, Personality
from daemon.http.compat.readiness import findings
from daemon.http.guard import GuardedSite, HttpPolicy, add_security_headers
from daemon.view.readmodel import ReadModel

log = structlog.get_logger()

NAMES = ("heygem", "story", "paksatalker", "visualizr", "wan")


def personality(name: str, view: ReadModel) -> Personality:
    module = importlib.import_module(f"daemon.http.compat.{name}")
    return module.PERSONALITY(view, getattr(view.settings.compat, name))


async def start_personality(front: Personality, max_connections: int) -> tuple[web.AppRunner, str]:
    host, port = front.config.address
    api = front.settings.api
    policy = HttpPolicy.for_listener(host, api.allowed_hosts, api.allowed_origins, body_types=front.body_types,
                                     read_timeout=api.read_timeout_seconds)
    limits = front.settings.limits
    app = web.Application(client_max_size=limits.job_json_bytes + 1024, client_max_fields=limits.form_fields,
                          middlewares=[front.chain(policy).middleware()])
    app.add_routes(front.routes())
    app.on_response_prepare.append(add_security_headers)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0,
                           keepalive_timeout=api.read_timeout_seconds, lingering_time=1.0, auto_decompress=False)
    await runner.setup()
    site = GuardedSite(runner, host, port, max_connections)
    await site.start()
    front.site = site
    url = f"http://{host if ':' not in host else f'[{host}]'}:{site.port}"
    log.info("compat.listening", personality=front.name, url=url)
    return runner, url


async def start_personalities(view: ReadModel, max_connections: int) -> tuple[list[web.AppRunner], dict[str, str]]:
    """Every configured personality, started; their runners (to clean up) and URLs by name.
    First the log says what each gets from this host, and which key to set where it lacks it."""
    for found in findings(view.settings, view.kinds):
        (log.info if found.ok else log.warning)("compat.host", personality=found.personality, message=found.message)
    runners, urls = [], {}
    for name in view.settings.compat.enabled():
        runner, urls[name] = await start_personality(personality(name, view), max_connections)
        runners.append(runner)
    return runners, urls
