import logging

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .tasks import job

logger = logging.getLogger(__name__)


@csrf_exempt  # an API-style endpoint for the deploy tests
@require_POST
@never_cache
def enqueue(request):
    """Enqueues one job (key=..., seconds=...): a worker runs it."""
    key = request.POST.get("key", "")[:100]
    seconds = min(float(request.POST.get("seconds", "1")), 30.0)
    queued = job.delay(key, seconds)
    logger.info("job %s queued as task %s", key, queued.id)
    return JsonResponse({"status": "queued", "key": key, "version": settings.APP_VERSION}, status=202)
