"""The HTTP fronts' start and stop: the native API and the enabled seed personalities, on the
daemon's loop, over one read model, sharing the connection budget ([api] max_connections)."""

from __future__ import annotations

from daemon.config import Settings


class Fronts:
    def __init__(self) -> None:
        self.api_url: str | None = None
        self.compat_urls: dict[str, str] = {}
        self._runners: list = []

    async def start(self, settings: Settings, view_of) -> None:
        """Starts what the settings enable; `view_of()` makes the read model (only if any)."""
        personalities = settings.compat.enabled()
        listeners = len(personalities) + bool(settings.api.enabled)
        if not listeners:
            return
        view = view_of()
        if settings.api.enabled:
            from daemon.http.api import start_api

            runner, self.api_url = await start_api(view, settings.api.host, settings.api.port, listeners)
            self._runners.append(runner)
        if personalities:
            from daemon.http.compat import start_personalities
            from daemon.http.fds import connection_budget

            budget = connection_budget(settings.api.max_connections, listeners)
            runners, self.compat_urls = await start_personalities(view, budget)
            self._runners[:0] = runners  # the personalities stop first, then the native API

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners = []
