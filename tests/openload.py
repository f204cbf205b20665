"""An open-loop HTTP load generator for zero-downtime tests and benchmarks.

Requests start at fixed times (``rate`` per second) whatever earlier requests
did, each on a new TCP connection, so a stalled server shows up as slow or
failed requests instead of slowing the client down (no coordinated omission).
Bounded in count and in time, and it only talks to loopback addresses.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import ssl
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_VERSION = re.compile(r"Pixel version (\S+?)<")


@dataclass
class Sample:
    index: int
    scheduled: float  # seconds since the load started
    started: float
    finished: float = 0.0
    status: int = 0
    error: str = ""
    version: str = ""

    @property
    def latency(self) -> float:
        return self.finished - self.started

    @property
    def ok(self) -> bool:
        return not self.error and 200 <= self.status < 400


@dataclass
class Summary:
    sent: int
    failed: int
    slow: int
    budget: float
    p50: float
    p99: float
    worst: float
    longest_gap: float  # the longest stretch without a successful answer
    late: float  # how far behind schedule the generator itself fell (worst case)
    versions: tuple[str, ...]
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.sent} requests: {self.failed} failed, {self.slow} over {self.budget:g}s, p50 {self.p50 * 1000:.0f} ms, "
            f"p99 {self.p99 * 1000:.0f} ms, worst {self.worst * 1000:.0f} ms, longest gap {self.longest_gap:.2f}s, "
            f"generator late by {self.late * 1000:.0f} ms at most, versions {', '.join(self.versions)}"
        )


def _loopback_only(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"open-loop load goes to loopback only, not {host}")


class NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to HOST:PORT that asks for, and checks the certificate of, NAME (SNI): a site's
    name served on loopback without touching /etc/hosts."""

    def __init__(self, host: str, port: int, name: str | None, **kwargs):
        super().__init__(host, port, **kwargs)
        self.name = name or host

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.name)


class OpenLoad:
    """``with OpenLoad(url, rate=50) as load: ...`` then ``load.summary()``."""

    def __init__(
        self,
        url: str,
        rate: float = 50,
        seconds: float = 180,
        max_requests: int = 20000,
        timeout: float = 10.0,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: Callable[[int], bytes] | None = None,
        context: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ):
        """An https:// URL is asked over TLS, each request a full handshake, checked with CONTEXT
        (default: the system's CAs) for SERVER_NAME (default: the URL's host), which is also the
        Host header: a site's name, served on loopback."""
        _loopback_only(url)
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.context = context or (ssl.create_default_context() if self.https else None)
        self.host, self.port = parts.hostname, parts.port or (443 if self.https else 80)
        self.path = parts.path or "/"
        self.rate, self.seconds, self.max_requests, self.timeout = rate, seconds, max_requests, timeout
        self.method, self.headers, self.body = method, dict(headers or {}), body
        self.server_name = server_name
        if server_name:
            self.headers.setdefault("Host", server_name)
        self.samples: list[Sample] = []
        self.marks: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(16, int(rate * (timeout + 1))))
        self._thread = threading.Thread(target=self._schedule, daemon=True)
        self._lock = threading.Lock()
        self.t0 = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, label: str) -> None:
        """Note an event (a deploy step) on the load's clock, for plots."""
        self.marks.append((self.now(), label))

    def _one(self, sample: Sample) -> None:
        sample.started = self.now()
        connection = (
            NamedHTTPSConnection(self.host, self.port, self.server_name, timeout=self.timeout, context=self.context)
            if self.https
            else http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        )
        try:
            headers = {"Connection": "close", **self.headers}
            data = self.body(sample.index) if self.body else None
            if data is not None:
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            connection.request(self.method, self.path, body=data, headers=headers)
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            sample.status = response.status
            match = _VERSION.search(body)
            sample.version = match.group(1) if match else ""
            if not sample.ok:
                sample.error = f"HTTP {response.status}: {body[:120]!r}"
        except (OSError, http.client.HTTPException) as error:
            sample.error = f"{type(error).__name__}: {error}"
        finally:
            connection.close()
            sample.finished = self.now()

    def _schedule(self) -> None:
        interval = 1.0 / self.rate
        for i in range(self.max_requests):
            due = i * interval
            if due > self.seconds or self._stop.is_set():
                return
            delay = due - self.now()
            if delay > 0 and self._stop.wait(delay):
                return
            sample = Sample(index=i, scheduled=due, started=0.0)
            with self._lock:
                self.samples.append(sample)
            self._pool.submit(self._one, sample)

    def __enter__(self) -> OpenLoad:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def summary(self, budget: float = 1.0, since: float = 0.0, until: float | None = None) -> Summary:
        done = [
            s for s in self.samples if s.finished and s.scheduled >= since and (until is None or s.scheduled <= until)
        ]
        latencies = sorted(s.latency for s in done) or [0.0]
        failed = [s for s in done if not s.ok]
        # Between consecutive successful answers (by the time they arrived), and
        # from the window's first request to the first one, and from the last
        # one to the window's last answer: a trailing outage counts too.
        gap = 0.0
        if done:
            edges = [
                min(s.scheduled for s in done),
                *sorted(s.finished for s in done if s.ok),
                max(s.finished for s in done),
            ]
            gap = max(b - a for a, b in zip(edges, edges[1:], strict=False))
        return Summary(
            sent=len(done),
            failed=len(failed),
            slow=sum(1 for s in done if s.latency > budget),
            budget=budget,
            p50=statistics.median(latencies),
            p99=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            worst=latencies[-1],
            longest_gap=gap,
            late=max((s.started - s.scheduled for s in done), default=0.0),
            versions=tuple(sorted({s.version for s in done if s.version})),
            failures=[f"t={s.scheduled:.2f}s {s.error}" for s in failed[:10]],
        )
