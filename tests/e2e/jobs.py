"""Background jobs as the roles' e2e tests drive them (issue 17): jobs enqueued through the
example app at a fixed rate, a watch on how many schedulers run at once, and the check that
every job accepted ran exactly once (the app's jobs_jobrun: a row when a job starts, its end
when it finished)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from tests.openload import OpenLoad

# Celery with Redis: told to take no more jobs before it is stopped (docs/roles.md says why).
QUIESCE = "python3 -m celery -A pixel control cancel_consumer celery --destination celery@%h"
ROLES = f"{{worker: {{kind: worker, quiesce: '{QUIESCE}'}}, beat: {{kind: scheduler}}}}"
REDIS_IMAGE = "127.0.0.1:5000/pushdeploy/redis:7"  # the sandbox's (scripts/sandbox-images/redis)
SERVER_ENV = f"REDIS_IMAGE={REDIS_IMAGE}\nPIXEL_TICK_SECONDS=2\n"  # lines for a server env: a tick every 2 s
WAIT = 150  # seconds for the last jobs to finish (a job a stopped worker held comes back after 60)


def unique(name: str) -> str:
    """A key prefix no earlier attempt used (jobs_jobrun keeps every run: a rerun of a test on the
    same database must not count the first attempt's runs as its own)."""
    return f"{name}{time.time_ns() // 1_000_000 % 10**9}"


def enqueue(base_url: str, prefix: str, rate: float = 2, seconds: float = 1.5, **https) -> OpenLoad:
    """POST /jobs/enqueue at RATE a second, whatever earlier requests did: job PREFIX-N takes SECONDS
    (HTTPS: OpenLoad's context and server_name)."""
    return OpenLoad(
        base_url.rstrip("/") + "/jobs/enqueue",
        rate=rate,
        seconds=300,
        method="POST",
        body=lambda i: f"key={prefix}-{i}&seconds={seconds}".encode(),
        **https,
    )


def accepted(load: OpenLoad) -> list:
    """The enqueue requests the app accepted (202)."""
    return [s for s in load.samples if s.finished and s.status == 202]


def assert_each_ran_once(queued: list, prefix: str, psql: Callable[[str], str]) -> collections.Counter:
    """Every job of QUEUED ran, and finished, exactly once; PSQL answers SQL on the app's
    database. Waits for the last ones. The runs per key."""
    finished = f"select key from jobs_jobrun where key like '{prefix}-%' and finished_at is not null"
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and len(psql(finished).split()) < len(queued):
        time.sleep(1)
    runs = collections.Counter(psql(f"select key from jobs_jobrun where key like '{prefix}-%'").split())
    lost = {f"{prefix}-{s.index}" for s in queued} - set(runs)
    twice = {key: n for key, n in runs.items() if n > 1}
    assert not lost and not twice, (sorted(lost)[:10], twice)
    assert len(psql(finished).split()) == len(queued)  # and every run finished
    return runs


class Most:
    """The largest value COUNT() returned, sampled every EVERY seconds from a thread while
    in the `with` block (how many schedulers run at once)."""

    def __init__(self, count: Callable[[], int], every: float = 0.3) -> None:
        self.count, self.every = count, every
        self.most, self.samples = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.most = max(self.most, self.count())
            self.samples += 1

    def __enter__(self) -> Most:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
