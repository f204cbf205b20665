"""The unit tests import the server's Python package as `pdserver`, as the client does."""

import pytest

from deploy import protocol  # noqa: F401  (registers scripts/server/lib/pdserver as pdserver)
from pdserver import facts

CONF = "APP_DIR={app}\nPROJECT=pixel-staging\nWEB_SERVICE=web\nHOOK_BEFORE_SWITCH=check --deploy\nMANAGE_COMMAND=showmigrations --list [a-z]+\n"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A temporary /etc/pushdeploy and state directory with one environment, staging."""
    etc, state, app = tmp_path / "etc", tmp_path / "state", tmp_path / "app"
    for path in (etc, state / "staging" / "runs", app):
        path.mkdir(parents=True)
    (etc / "staging.conf").write_text(CONF.format(app=app))
    (app / ".env").write_text("SECRET=x\nVERSION=1.4.0\n")
    monkeypatch.setattr(facts, "ETC", str(etc))
    monkeypatch.setattr(facts, "STATE", str(state))
    return tmp_path
