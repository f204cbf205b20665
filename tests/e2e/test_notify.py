"""Notifications through the real stack: the server posts to webhooks on 127.0.0.1 (a receiver in this process).

The sandbox's server is this machine's root namespace, so the detached deploy on
the server reaches the receiver's loopback port directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, inv, served_version, tool_env, wait_for_version
from tests.e2e.deployed import ensure

pytestmark = pytest.mark.e2e

WEBHOOKS_FILE = Path("/etc/pushdeploy/production.webhooks")
NOTIFY_LOG = Path("/var/lib/pushdeploy/production/notify.log")


class Receiver:
    """Webhook endpoints: /ok and /slack answer 200, /fail 500, /hang only after a minute."""

    def __init__(self):
        self.calls: list[tuple[str, dict, float]] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                calls.append((self.path, body, time.monotonic()))
                if self.path == "/hang":
                    time.sleep(60)
                self.send_response(500 if self.path == "/fail" else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[dict]:
        return [body for p, body, _ in self.calls if p == path]

    def wait(self, path: str, predicate, seconds: float = 30) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = [b for b in self.bodies(path) if predicate(b)]
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"nothing matching arrived at {path} within {seconds}s; got {self.bodies(path)}")


def event(name: str, version: str):
    return lambda body: body.get("event") == name and body.get("version") == version


def slack_text(fragment: str):
    return lambda body: fragment in body.get("text", "")


@pytest.fixture(scope="module")
def receiver(server):
    receiver = Receiver()
    yield receiver
    removed = inv("server.setup", "--env", "production", DEPLOY_PRODUCTION_WEBHOOKS="")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not WEBHOOKS_FILE.exists()
    receiver.server.shutdown()


def deploy(tag: str, *args: str):
    started = time.monotonic()
    result = inv("deploy.production", "--tag", tag, *args)
    return result, time.monotonic() - started


def test_webhooks_hear_of_every_deploy_without_slowing_it(receiver):
    ensure("production", "1.0.0")
    baseline, took_without = deploy("1.1.0")
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr

    hooks = " ".join(
        [
            f"json={receiver.url('/ok')}",
            f"slack={receiver.url('/slack')}",
            f"json={receiver.url('/fail')}",
            f"json={receiver.url('/hang')}",
        ]
    )
    setup = inv("server.setup", "--env", "production", DEPLOY_PRODUCTION_WEBHOOKS=hooks)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert str(receiver.port) not in setup.stdout + setup.stderr, "the URLs are secrets: never printed"
    assert f"| changed   {WEBHOOKS_FILE}" in setup.stdout
    assert (WEBHOOKS_FILE.stat().st_mode & 0o777, WEBHOOKS_FILE.stat().st_uid) == (0o600, 0)

    # One webhook answers 500 and one never answers: the deploy takes as long as without them.
    result, took = deploy("1.0.0", "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < took_without + 5, f"{took:.1f}s with webhooks, {took_without:.1f}s without"
    assert str(receiver.port) not in result.stdout + result.stderr
    assert "| notifying the webhooks: started" in result.stdout

    started = receiver.wait("/ok", event("started", "1.0.0"))[0]
    assert (started["env"], started["previous"], started["kind"], started["project"]) == (
        "production",
        "1.1.0",
        "deploy",
        "pixel-production",
    )
    succeeded = receiver.wait("/ok", event("succeeded", "1.0.0"))[0]
    assert (
        succeeded["outcome"] == "ok" and succeeded["digest"].startswith("sha256:") and float(succeeded["duration"]) > 0
    )
    assert succeeded["by"].startswith("local:")
    assert set(receiver.wait("/slack", slack_text("deployed 1.0.0 to pixel-production"))[0]) == {"text"}

    # At once, a release whose migration fails: the previous deploy's webhook
    # senders (still retrying /fail and waiting on /hang) do not hold its lock.
    failing, _ = deploy("1.3.0-badmigration")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    failed = receiver.wait("/ok", event("failed", "1.3.0-badmigration"))[0]
    assert (failed["failed_step"], failed["serving"], failed["outcome"]) == ("migrate", "1.0.0", "failed")
    assert "Traceback" in failed["log_tail"] or "Error" in failed["log_tail"], failed["log_tail"]
    slack = receiver.wait("/slack", slack_text("deploy of 1.3.0-badmigration to pixel-production on"))
    failed_text = next(body["text"] for body in receiver.wait("/slack", slack_text("FAILED at migrate")))
    assert "1.3.0-badmigration" in failed_text and failed_text.rstrip().endswith("```"), failed_text
    assert any("started" in body["text"] for body in slack)
    assert served_version("production") == "1.0.0"

    # A 500 is retried with backoff, a bounded number of times.
    time.sleep(5)
    assert (
        len([b for b in receiver.bodies("/fail") if b.get("event") == "succeeded" and b.get("version") == "1.0.0"]) == 3
    )
    assert receiver.bodies("/hang"), "the hanging receiver was asked too"
    log = NOTIFY_LOG.read_text()
    assert "succeeded NOT sent to webhook 3 (json) after 3 try(ies): HTTP 500" in log
    assert str(receiver.port) not in log


def test_a_killed_client_still_notifies(receiver):
    ensure("production", "1.0.0")
    client = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy.rollback", "--env", "production", "--to", "1.1.0"],
        cwd=ROOT,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    for line in client.stdout:
        if "==> pull" in line:
            break
    os.killpg(client.pid, signal.SIGKILL)
    client.wait(timeout=10)
    rolled = receiver.wait("/ok", event("rolled_back", "1.1.0"), seconds=60)[0]
    assert (rolled["kind"], rolled["previous"], rolled["outcome"]) == ("rollback", "1.0.0", "ok")
    assert wait_for_version("production", "1.1.0") == "1.1.0"
