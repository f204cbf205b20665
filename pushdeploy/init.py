"""`pushdeploy init`: the files a Django project needs to be deployed, written once.

Pure: a project folder and the answers in, the files' paths and texts out. It finds what
it can (the Django settings module from manage.py, the app's name from the folder) and
asks for the rest (the image, the hosts, whether there is a database service). Files
that exist are never overwritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pdserver import schema

# Target path in the project -> template (pushdeploy/templates).
FILES = {
    "pushdeploy.yaml": "pushdeploy.yaml",
    "deploy/docker-compose.yml": "docker-compose.yml",
    "deploy/nginx/app.conf": "nginx.conf",
    "deploy/server.env.example": "server.env.example",
    ".github/workflows/pushdeploy.yml": "github-deploy.yml",
    ".circleci/config.yml": "circleci.yml",
}

DJANGO_LINES = """Two things init cannot write for you, in your Django project:

  1. A health check the new version must pass before it takes traffic (the end of the
     root urls.py; first in the list, so no catch-all pattern answers it):
       from django.http import HttpResponse
       urlpatterns = [path("health", lambda request: HttpResponse("ok")), *urlpatterns]
     It is asked from inside the container: ALLOWED_HOSTS must admit 127.0.0.1 (the
     server .env's template does), and a SECURE_SSL_REDIRECT must exempt it
     (SECURE_REDIRECT_EXEMPT = [r"^health$"]).
  2. Static files where the proxy reads them (settings.py):
       STATIC_ROOT = "/srv/static"

And what the image must do (docs/your-own-app.md): run the app server on port 8000
(gunicorn), never migrate at start (pushdeploy migrates before the switch), have
/srv/static owned by the user it runs as (RUN mkdir -p /srv/static && chown USER
/srv/static, before USER), keep no state inside the container (the database and uploads
live outside it)."""

_SETTINGS = re.compile(r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([A-Za-z_][\w.]*)["']""")


@dataclass(frozen=True)
class Answers:
    app: str
    image: str
    settings_module: str
    staging_hosts: str
    production_hosts: str
    database: bool = True


def found(root: Path) -> dict:
    """What init can find out by itself: the app's name, the settings module."""
    facts = {"app": app_name(root.name)}
    for manage in (root / "manage.py", *sorted(root.glob("*/manage.py"))):
        if manage.is_file():
            match = _SETTINGS.search(manage.read_text(errors="replace"))
            if match:
                facts["settings_module"] = match.group(1)
                break
    return facts


def app_name(text: str) -> str:
    """A compose project name from a folder's name: lower case, [a-z0-9_-]."""
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_") or "app"
    return name if re.fullmatch(schema.PROJECT_RE, name) else "app"


def render(answers: Answers, settings_file: str = "pushdeploy.yaml") -> dict[str, str]:
    """Each file's text, by its path in the project (the settings as SETTINGS_FILE: what the
    program that reads them looks for, pushdeploy.yaml or inv's invoke.yaml)."""
    from pushdeploy import __version__

    values = {
        "version": __version__,
        "app": answers.app,
        "image": answers.image,
        "settings_module": answers.settings_module,
        "staging_hosts": answers.staging_hosts,
        "production_hosts": answers.production_hosts,
        **_database(answers.database),
    }
    texts = {}
    for target, template in FILES.items():
        target = settings_file if target == "pushdeploy.yaml" else target
        text = resources.files("pushdeploy").joinpath("templates", template).read_text()
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        texts[target] = re.sub(r"\n{3,}", "\n\n", text)
    return texts


def _database(database: bool) -> dict[str, str]:
    if not database:
        return {
            "db_service": "''",
            "backup": "false",
            "db_depends": "",
            "db_service_block": "",
            "db_volume": "",
            "db_env": "",
        }
    return {
        "db_service": "db",
        "backup": "true",
        "db_depends": "    depends_on: [db]\n",
        "db_service_block": """
  db:
    image: "${DB_IMAGE:-postgres:16}"
    env_file: [.env]                # POSTGRES_DB, POSTGRES_USER, POSTGRES_PASSWORD
    volumes:
      - dbdata:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U $$POSTGRES_USER -d $$POSTGRES_DB"]
      interval: 2s
      timeout: 3s
      retries: 15
    restart: unless-stopped
""",
        "db_volume": "  dbdata:\n",
        "db_env": "\n# PostgreSQL, the `db` service (Django reads these, or build DATABASE_URL from them).\n"
        "POSTGRES_HOST=db\nPOSTGRES_DB=app\nPOSTGRES_USER=app\nPOSTGRES_PASSWORD=replace-with-a-database-password\n",
    }


def writes(root: Path, texts: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(the files to write, the ones that exist and are left alone)."""
    new = {path: text for path, text in texts.items() if not (root / path).exists()}
    return new, sorted(set(texts) - set(new))
