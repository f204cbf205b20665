"""Pixel's background jobs: Celery with a Redis broker (CELERY_BROKER_URL), only when set.

A job is acknowledged once it finished (acks_late) and a worker takes one job at a time
(prefetch 1): a worker that stops gracefully (SIGTERM: warm shutdown) finishes its job in
hand and hands nothing else back unfinished; one that dies leaves its job to the broker,
which gives it to another worker.
"""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pixel.settings")

app = Celery("pixel")
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "redis://redis:6379/0"),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # A job taken but not acknowledged this long goes back to the queue (Redis has no other
    # way to notice a worker that went away with it): longer than any job runs (jobs/views.py
    # caps them at 30 s); 60 s instead of the hour Celery sets, so a job a stopped worker did
    # not hand back runs a minute later, not an hour.
    broker_transport_options={"visibility_timeout": int(os.environ.get("PIXEL_VISIBILITY_TIMEOUT", "60"))},
    task_ignore_result=True,
    beat_schedule={
        "tick": {"task": "jobs.tasks.tick", "schedule": float(os.environ.get("PIXEL_TICK_SECONDS", "5"))},
    },
    timezone="UTC",
)
app.autodiscover_tasks(["jobs"])


@worker_init.connect
def _fault(**_):
    """A broken release's worker (the deploy tool's tests): it exits as it starts."""
    if os.environ.get("PIXEL_FAULT") == "worker":
        raise SystemExit("fault injected (PIXEL_FAULT=worker): this worker does not start")
