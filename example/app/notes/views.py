import logging
import time

from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import Visit

logger = logging.getLogger(__name__)


@never_cache
def index(request):
    if settings.PIXEL_FAULT == "health":  # a broken release: its pages fail too
        return JsonResponse({"status": "error", "detail": "broken release"}, status=500)
    visit = Visit.objects.create(path=request.path[:255])
    context = {
        "version": settings.APP_VERSION,
        "app_env": settings.APP_ENV,
        # The new row's id, not count(*): a count scans the whole table, and a page
        # that gets slower with every visit would measure the table, not the deploy.
        "visit_count": visit.id,
    }
    return render(request, "notes/index.html", context)


def _unhealthy(detail):
    logger.warning("health check failed: %s", detail)
    return JsonResponse({"status": "error", "detail": detail}, status=503)


@never_cache
def health(request):
    """200 only when the database answers and every migration is applied."""
    if settings.PIXEL_FAULT == "health":
        return _unhealthy("fault injected (PIXEL_FAULT=health)")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # any database failure makes the release unhealthy
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return _unhealthy(f"database error: {type(exc).__name__}: {first_line}"[:300])
    if plan:
        pending = ", ".join(f"{m.app_label}.{m.name}" for m, _backwards in plan)
        return _unhealthy(f"unapplied migrations: {pending}")
    return JsonResponse({"status": "ok", "version": settings.APP_VERSION})


@never_cache
def slow(request):
    """A request that takes a while (?seconds=N, at most 30): it must survive a deploy."""
    seconds = min(float(request.GET.get("seconds", "5")), 30.0)
    time.sleep(seconds)
    return JsonResponse({"status": "ok", "slept": seconds, "version": settings.APP_VERSION})


@csrf_exempt  # an API-style endpoint for the deploy tests: a POST must be answered exactly once
@require_POST
def record(request):
    """Stores one row per POST (token=...), so a test can tell a POST was not sent twice."""
    token = request.POST.get("token", "")[:200]
    Visit.objects.create(path=f"post:{token}")
    return JsonResponse({"status": "created", "token": token, "version": settings.APP_VERSION}, status=201)
