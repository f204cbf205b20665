import os

# Celery's app, for `celery -A pixel` and for jobs' .delay(), where a broker is configured.
if os.environ.get("CELERY_BROKER_URL"):
    from .celery import app as celery_app

    __all__ = ("celery_app",)
