"""Settings for the Pixel example app, read from the environment.

Works with Django 3.2 (Debian bookworm's python3-django) and Django 4.2/5.x.
"""

import os
from pathlib import Path

import django
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name, default):
    raw = os.environ.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = _env_flag("DEBUG")

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set (or DEBUG=1 for local development)")
    SECRET_KEY = "insecure-local-development-key"

APP_VERSION = os.environ.get("APP_VERSION", "dev")
APP_ENV = os.environ.get("APP_ENV", "local")
# Fault injection for the deploy tool's tests ("health" makes /health answer 503).
PIXEL_FAULT = os.environ.get("PIXEL_FAULT", "")

ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "*")
if "*" not in ALLOWED_HOSTS:
    # The container's HEALTHCHECK calls http://127.0.0.1:8000/health.
    ALLOWED_HOSTS += ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "notes",
]
# Background jobs (Celery, jobs/): only where a broker is configured.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
if CELERY_BROKER_URL:
    INSTALLED_APPS.append("jobs")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "pixel.urls"
WSGI_APPLICATION = "pixel.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
            ],
        },
    },
]

if os.environ.get("POSTGRES_HOST"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("POSTGRES_DB", "pixel"),
            "USER": os.environ.get("POSTGRES_USER", "pixel"),
            "PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
            "HOST": os.environ["POSTGRES_HOST"],
            "PORT": os.environ.get("POSTGRES_PORT", "5432"),
            # Fail fast so /health answers within the container healthcheck's timeout.
            "OPTIONS": {"connect_timeout": 2},
            # Seconds a worker keeps its database connection (0: one per request).
            # A database on another host costs a connection set-up per request.
            "CONN_MAX_AGE": int(os.environ.get("POSTGRES_CONN_MAX_AGE", "0")),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(os.environ.get("DATA_DIR", "/tmp"), "pixel.sqlite3"),
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# nginx terminates the client connection and says which scheme it used.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

STATIC_URL = "/static/"
# A named volume shared with nginx; STATIC_ROOT may be overridden for local runs.
STATIC_ROOT = os.environ.get("STATIC_ROOT", "/srv/static")

# Hashed file names let the old and the new release's assets coexist in STATIC_ROOT.
_MANIFEST_STORAGE = "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
if django.VERSION >= (4, 2):
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": _MANIFEST_STORAGE},
    }
else:
    STATICFILES_STORAGE = _MANIFEST_STORAGE

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "plain",
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["stdout"], "level": LOG_LEVEL, "propagate": False},
    },
}
