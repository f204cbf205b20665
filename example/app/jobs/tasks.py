import logging
import socket
import time

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from .models import JobRun, Tick

logger = logging.getLogger(__name__)


@shared_task(bind=True)
def job(self, key, seconds):
    """A job that takes SECONDS: its run is a row from start to end."""
    logger.info("job %s starts on %s", key, socket.gethostname())
    run = JobRun.objects.create(
        key=key, task_id=self.request.id, version=settings.APP_VERSION, worker=socket.gethostname()
    )
    time.sleep(float(seconds))
    run.finished_at = timezone.now()
    run.save(update_fields=["finished_at"])


@shared_task(bind=True)
def tick(self):
    Tick.objects.create(task_id=self.request.id, version=settings.APP_VERSION)
