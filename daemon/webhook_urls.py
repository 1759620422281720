"""Which webhook URLs a job file may name (SPEC §10.1): the SSRF rules, shared by validation
(daemon/jobfile.py) and sending (daemon/webhook_send.py).

A job file's URL must start with one of `[webhooks] allowed_urls`. An address that is not
public (loopback, private, link-local, multicast, unspecified …) is refused unless a prefix
that matched names the URL's host and port itself ("http://127.0.0.1:9000/hooks/"): a prefix
like "https://" or "https://hooks" lets a job file reach public addresses only.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number
        port = None
    return (parts.hostname or "").rstrip("."), port


def matching_prefixes(url: str, allowed: list[str]) -> list[str]:
    return [p for p in allowed if url.startswith(p)]


def names_host(prefix: str, url: str) -> bool:
    """Whether `prefix` spells out the URL's host and port (allowing that host explicitly)."""
    host, port = _host_port(prefix)
    return bool(host) and (host, port) == _host_port(url) and urlsplit(prefix).scheme == urlsplit(url).scheme


def allowed_explicitly(url: str, allowed: list[str]) -> bool:
    return any(names_host(p, url) for p in matching_prefixes(url, allowed))


def address_problem(address: str) -> str | None:
    """Why a job file's URL may not reach `address` (an IP), or None for a public one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for what in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(ip, f"is_{what}"):
            return f"{address} is a {what.replace('_', '-')} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


def job_url_problem(url: str, allowed: list[str]) -> str | None:
    """Why a job file may not name `url` (checked at validation, without resolving names);
    None if it may."""
    if not allowed:
        return ("a job file may not name a webhook URL while [webhooks] allowed_urls is empty "
                "(a preset's webhook or [webhooks] default may)")
    if not matching_prefixes(url, allowed):
        return f"{url!r} does not start with any of [webhooks] allowed_urls ({', '.join(allowed)})"
    if allowed_explicitly(url, allowed):
        return None
    host, _ = _host_port(url)
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is a loopback name; only a prefix in [webhooks] allowed_urls that names it allows it"
    try:
        problem = address_problem(host)
    except ValueError:
        return None  # a name: its addresses are checked when the webhook is sent
    return problem and f"{problem}; only a prefix in [webhooks] allowed_urls that names it allows it"


def resolved_problem(url: str) -> str | None:
    """Why the addresses the URL's host resolves to may not be reached (any one not public);
    None if they may, or if the name does not resolve now (the attempt then fails to connect
    and is retried; the connection's own peer is checked too). Runs in a sender thread."""
    host, port = _host_port(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        problem = address_problem(info[4][0])
        if problem:
            return f"{host}: {problem}"
    return None
