"""Credentials and region of a bucket spool: the standard AWS chain, as botocore resolves it
(environment, AWS_PROFILE or [s3] profile with ~/.aws/credentials and ~/.aws/config, SSO,
credential_process, web identity, container and instance roles), shared by both clients."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from daemon.bucket.errors import Refused

if TYPE_CHECKING:
    import botocore.credentials
    import botocore.session

    from daemon.config import S3Config

DEFAULT_REGION = "us-east-1"
# How long obstore may keep a refreshable credential before asking again; botocore hands
# out ones valid for at least 10 more minutes, so a kept one never expires in use.
REFRESH_AFTER = timedelta(minutes=5)
NO_CREDENTIALS = ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                  "or AWS_PROFILE (or [s3] profile) naming a profile of ~/.aws/credentials, "
                  "or run where a container or instance role applies")


@dataclass(frozen=True)
class StaticCredentials:
    """Keys given outright (tests, tools), instead of the chain."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def aws_session(config: S3Config, credentials: StaticCredentials | None = None) -> botocore.session.Session:
    """A botocore session of [s3] profile (else the chain's), or of `credentials`."""
    import botocore.exceptions
    import botocore.session

    try:
        session = botocore.session.Session(profile=config.profile or None)
        if credentials is not None:
            session.set_credentials(credentials.access_key_id, credentials.secret_access_key,
                                    credentials.session_token)
        session.get_scoped_config()  # a missing profile fails here, not at the first request
    except botocore.exceptions.ProfileNotFound as exc:
        raise Refused("credentials", "profile", str(exc)) from None
    return session


def region_of(config: S3Config, session: botocore.session.Session) -> str:
    return config.region or session.get_config_variable("region") or DEFAULT_REGION


class ChainCredentials:
    """obstore's credential provider, answered from a botocore session's credentials."""

    def __init__(self, session: botocore.session.Session):
        found = session.get_credentials()
        if found is None:
            raise Refused("credentials", "chain", NO_CREDENTIALS)
        self._credentials: botocore.credentials.Credentials = found
        self._refreshable = hasattr(found, "refresh_needed")

    @property
    def source(self) -> str:
        """Where the chain found them: "env", "shared-credentials-file", "iam-role", …"""
        return self._credentials.method

    def __call__(self) -> dict:
        frozen = self._credentials.get_frozen_credentials()
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key,
                "token": frozen.token,
                "expires_at": datetime.now(UTC) + REFRESH_AFTER if self._refreshable else None}
