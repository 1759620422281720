"""Which webhook URLs a job file may name (SPEC §10.1): the SSRF rules, shared by validation
(daemon/jobs/jobfile.py) and sending (daemon/webhooks/send.py).

A job file's URL must start with one of `[webhooks] allowed_urls`, and name its host
plainly: a host name or an IP address as written, nothing an HTTP client would decode into
something else (`%31%32%37.0.0.1`, `2130706433`, `user@`). An address that is not public
(loopback, private, link-local, multicast, unspecified …) is refused unless a prefix that
matched names the URL's host and port itself ("http://127.0.0.1:9000/hooks/"): a prefix like
"https://" or "https://hooks" lets a job file reach public addresses only.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import idna  # as the HTTP client's URL library (yarl) encodes a name that is not ASCII

DEFAULT_PORTS = {"http": 80, "https": 443}
LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # a host ending so is read as an IPv4 address


def host_port(url: str) -> tuple[str, int | None]:
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
    host, port = host_port(prefix)
    return bool(host) and (host, port) == host_port(url) and urlsplit(prefix).scheme == urlsplit(url).scheme


def allowed_explicitly(url: str, allowed: list[str]) -> bool:
    return any(names_host(p, url) for p in matching_prefixes(url, allowed))


def address_problem(address: str) -> str | None:
    """Why a job file's URL may not reach `address` (an IP), or None for a public one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    elif isinstance(ip, ipaddress.IPv6Address):  # an IPv4 address inside one (6to4, Teredo's client)
        inner = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None and (problem := address_problem(str(inner))):
            return f"{address} carries {problem}"
    for what in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(ip, f"is_{what}"):
            return f"{address} is a {what.replace('_', '-')} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


def host_problem(url: str) -> str | None:
    """Why the URL does not name its host plainly (a host name of letters, digits, "-" and
    "_" labels, IDNA allowed; a dotted-quad IPv4 address; a bracketed IPv6 address, no zone),
    or None if it does. Anything else means one thing to this check and another to a client."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        return "a webhook URL may not carry a user name or password (\"@\")"
    host = parts.hostname or ""
    if not host:
        return f"{url!r} names no host"
    if "%" in host:
        return f"host {host!r} is %-encoded; write it as it is"
    if netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"[{host}] is not an IPv6 address"
        return None
    name = host[:-1] if host.endswith(".") else host  # one trailing dot: a fully qualified name
    try:
        name = name if name.isascii() else idna.encode(name, uts46=True).decode()
    except idna.IDNAError as exc:
        return f"host {host!r} is not a valid host name ({exc})"
    labels = name.split(".")
    if len(name) > 253 or not all(LABEL.fullmatch(label) for label in labels):
        return f"host {host!r} is not a valid host name or IP address (labels of letters, digits, '-' and '_')"
    if NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            return f"host {host!r} reads as an IPv4 address to an HTTP client; write it as a.b.c.d"
    try:
        parts.port
    except ValueError:
        return f"the port of {url!r} is not a number from 0 to 65535"
    return None


def job_url_problem(url: str, allowed: list[str]) -> str | None:
    """Why a job file may not name `url` (checked at validation, without resolving names);
    None if it may."""
    if not allowed:
        return ("a job file may not name a webhook URL while [webhooks] allowed_urls is empty "
                "(a preset's webhook or [webhooks] default may)")
    if not matching_prefixes(url, allowed):
        return f"{url!r} does not start with any of [webhooks] allowed_urls ({', '.join(allowed)})"
    if problem := host_problem(url):
        return problem
    if allowed_explicitly(url, allowed):
        return None
    host, _ = host_port(url)
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is a loopback name; only a prefix in [webhooks] allowed_urls that names it allows it"
    try:
        problem = address_problem(host)
    except ValueError:
        return None  # a name: its addresses are checked when the webhook is sent
    return problem and f"{problem}; only a prefix in [webhooks] allowed_urls that names it allows it"
