"""WSGI entry point: `gunicorn pixel.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pixel.settings")

application = get_wsgi_application()
