"""The daemon's services: parts with a life of their own beside the main loop (deliveries to
presets' folders, signed webhooks, the outbox's retention sweep). The arbiter lists them
once and drives them all the same way: started once the spool is opened, told of each
status this daemon writes and of each dead host whose work it takes over, stopped when it
drains. (Hub downloads belong to the read model: they start on a request.)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class Service(Protocol):
    def start(self) -> None:
        """After the spool is opened: takes up what a previous run left."""

    def stop(self) -> None:
        """At drain, on the loop, without waiting: what is in flight is redone at the next start."""


@runtime_checkable
class ObservesStatuses(Protocol):
    def on_status(self, doc: dict) -> None:
        """A status this daemon wrote (on the loop, right after the write)."""


@runtime_checkable
class TakesOver(Protocol):
    def take_over(self, host: str) -> None:
        """Dead `host`'s owed work of this service, taken by this host."""


class Services:
    """The services, in the order they start (and stop)."""

    def __init__(self, *services: Service):
        self.all = services

    def start(self) -> None:
        for service in self.all:
            service.start()

    def on_status(self, doc: dict) -> None:
        for service in self.all:
            if isinstance(service, ObservesStatuses):
                service.on_status(doc)

    def take_over(self, host: str) -> None:
        for service in self.all:
            if isinstance(service, TakesOver):
                service.take_over(host)

    def stop(self) -> None:
        for service in self.all:
            service.stop()
