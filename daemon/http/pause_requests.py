"""The bodies of POST /api/v1/pause and /api/v1/resume (daemon/spool/pause.py writes the
pause files they ask for)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from daemon.config import HOST_PATTERN


class PauseRequest(BaseModel):
    """POST /api/v1/pause: every field optional."""

    model_config = ConfigDict(extra="forbid", strict=True)
    now: bool = Field(False, description="also requeue running jobs at their next step (the attempt is not counted)")
    free_memory: bool = Field(False, description="idle workers unload their models")
    host: str | None = Field(None, pattern=HOST_PATTERN, description="pause only this host (default: every host)")
    reason: str | None = Field(None, max_length=500)


class ResumeRequest(BaseModel):
    """POST /api/v1/resume: `host` lifts that host's pause; none lifts every pause."""

    model_config = ConfigDict(extra="forbid", strict=True)
    host: str | None = Field(None, pattern=HOST_PATTERN)
