"""Notifications' pure parts: the webhook setting (a secret), the payloads, retries with backoff."""

from __future__ import annotations

import importlib.util
import urllib.error

import pytest

from pushdeploy import notify, plan, protocol, settings

from pdserver import pipeline

SERVER_NOTIFY = protocol.SERVER_DIR / "lib" / "notify.py"


@pytest.fixture(scope="module")
def server():
    spec = importlib.util.spec_from_file_location("notify_py", SERVER_NOTIFY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OK = {
    "time": "2026-11-22T10:00:00Z",
    "env": "production",
    "kind": "deploy",
    "version": "1.4.0",
    "previous": "1.3.0",
    "by": "circleci:jane",
    "url": "https://ci/77",
    "outcome": "ok",
    "failed_step": "",
    "duration": 7.25,
    "digest": "sha256:" + "ab" * 32,
    "steps": [{"name": "pull", "seconds": 1.0, "ok": True}],
    "log_tail": "",
}
FAILED = {
    **OK,
    "outcome": "failed",
    "failed_step": "migrate",
    "duration": 3.0,
    "log_tail": "\n".join(f"line {n}" for n in range(30)),
    "steps": [{"name": "migrate", "seconds": 2.0, "ok": False}, {"name": "rollback", "seconds": 0.5, "ok": True}],
}
GIVEN = {
    "env": "production",
    "project": "pixel-production",
    "host": "web1",
    "kind": "deploy",
    "version": "1.4.0",
    "previous": "1.3.0",
    "by": "circleci:jane",
    "url": "",
    "time": "T0",
}


# ------------------------------------------------------------------ the setting


@pytest.mark.parametrize(
    ("text", "hooks"),
    [
        ("https://example.org/hook", [("json", "https://example.org/hook")]),
        (
            "slack=https://hooks.slack.com/services/T/B/x json=http://127.0.0.1:9000/h?a=b",
            [("slack", "https://hooks.slack.com/services/T/B/x"), ("json", "http://127.0.0.1:9000/h?a=b")],
        ),
        (
            "json=https://a.example/1,\njson=https://b.example/2",
            [("json", "https://a.example/1"), ("json", "https://b.example/2")],
        ),
        ("", []),
    ],
)
def test_webhooks_setting_reads_kinds_and_urls(text, hooks):
    assert notify.parse(text, "DEPLOY_PRODUCTION_WEBHOOKS") == hooks


@pytest.mark.parametrize(
    "text",
    [
        "teams=https://x.example/secret123",
        "ftp://x.example/secret123",
        "json=https://user:secret123@x.example/",
        "secret123",
        "json=https:///secret123",
    ],
)
def test_a_bad_webhook_is_refused_without_printing_it(text):
    with pytest.raises(notify.WebhookError) as error:
        notify.parse(text, "DEPLOY_PRODUCTION_WEBHOOKS")
    assert "secret123" not in str(error.value) and "DEPLOY_PRODUCTION_WEBHOOKS: item 1" in str(error.value)


def test_the_variable_is_per_environment_and_unset_keeps_the_servers_file():
    assert notify.variable("review-12") == "DEPLOY_REVIEW_12_WEBHOOKS"
    assert notify.for_environment({}, "staging") is None
    assert notify.for_environment({"DEPLOY_STAGING_WEBHOOKS": ""}, "staging") == []
    assert (
        notify.server_file([("slack", "https://h/x"), ("json", "https://h/y")])
        == b"slack https://h/x\njson https://h/y\n"
    )


def test_webhooks_travel_in_the_bundle_only_not_in_the_settings():
    env = settings.from_config({"environments": {"staging": {"hosts": ["h"]}}}, {}).environment("staging")
    server_side = protocol.ServerSide({name: b"" for name in protocol.SERVER_FILES})
    with_hooks = plan.bundle(env, server_side, {}, None, "ssh-ed25519 AAAA", b"json https://h/secret\n")
    assert with_hooks.files["webhooks"] == b"json https://h/secret\n"
    assert b"secret" not in with_hooks.files["env.conf"], "the settings hash (and server.check) never see them"
    assert "webhooks" not in plan.bundle(env, server_side, {}, None, "ssh-ed25519 AAAA").files


# ------------------------------------------------------------------ payloads


def test_started_payload_carries_what_bin_deploy_gave(server):
    facts = server.facts_for("started", {}, GIVEN)
    body = server.payload("json", facts)
    assert (
        body["event"] == "started"
        and body["version"] == "1.4.0"
        and body["previous"] == "1.3.0"
        and body["host"] == "web1"
    )
    assert "failed_step" not in body and "outcome" not in body
    assert body["text"] == "deploy of 1.4.0 to pixel-production on web1 started by circleci:jane (running: 1.3.0)"


def test_succeeded_payload_comes_from_the_history_record(server):
    body = server.payload("json", server.facts_for("finished", OK, GIVEN))
    assert (body["event"], body["outcome"], body["duration"], body["digest"]) == ("succeeded", "ok", 7.25, OK["digest"])
    assert body["text"].startswith(
        "deployed 1.4.0 to pixel-production on web1 in 7.2s (was 1.3.0), by circleci:jane [sha256:abababababab]"
    )
    assert body["text"].endswith("<https://ci/77>")


def test_failed_payload_has_the_step_the_log_tail_and_what_serves(server):
    body = server.payload("json", server.facts_for("finished", FAILED, GIVEN))
    assert (body["event"], body["failed_step"], body["serving"]) == ("failed", "migrate", "1.3.0")
    assert body["log_tail"].splitlines() == [f"line {n}" for n in range(15, 30)], "the last 15 lines"
    assert "FAILED at migrate" in body["text"]
    not_undone = {**FAILED, "steps": [{"name": "migrate", "ok": False}, {"name": "rollback", "ok": False}]}
    assert server.facts_for("finished", not_undone, GIVEN)["serving"].startswith("unknown")


def test_a_rollback_run_is_rolled_back(server):
    facts = server.facts_for("finished", {**OK, "kind": "rollback", "version": "1.3.0", "previous": "1.4.0"}, GIVEN)
    assert facts["event"] == "rolled_back"
    assert server.summary(facts).startswith("rolled pixel-production on web1 back to 1.3.0 in 7.2s (was 1.4.0)")


def test_slack_payload_is_text_only_with_the_log_tail_in_a_code_block(server):
    ok = server.payload("slack", server.facts_for("finished", OK, GIVEN))
    assert set(ok) == {"text"} and "```" not in ok["text"]
    failed = server.payload("slack", server.facts_for("finished", FAILED, GIVEN))
    assert set(failed) == {"text"}
    assert failed["text"].endswith("\n```\nline 15\n" + "\n".join(f"line {n}" for n in range(16, 30)) + "\n```")


# ------------------------------------------------------------------ delivery


def make_send(answers):
    calls = []

    def send(url, body, timeout):
        calls.append(timeout)
        answer = answers[len(calls) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return send, calls


def http_error(code):
    return urllib.error.HTTPError("https://h/x", code, "error", {}, None)


@pytest.mark.parametrize(
    ("answers", "ok", "tries", "slept"),
    [
        ([200], True, 1, []),
        ([http_error(500), 204], True, 2, [1]),
        ([urllib.error.URLError(TimeoutError("timed out")), http_error(503), http_error(502)], False, 3, [1, 3]),
        ([http_error(429), http_error(429), 200], True, 3, [1, 3]),
        ([http_error(404)], False, 1, []),
        ([ConnectionRefusedError(111, "refused"), 200], True, 2, [1]),
    ],
)
def test_delivery_retries_a_few_times_with_backoff_and_gives_up(server, answers, ok, tries, slept):
    send, calls = make_send(answers)
    sleeps = []
    result = server.deliver("https://h/x", {"text": "t"}, send=send, sleep=sleeps.append)
    assert result[:2] == (ok, tries)
    assert sleeps == slept
    assert all(timeout == server.TIMEOUT for timeout in calls)


def test_the_worst_case_is_bounded_well_below_the_hard_limit(server):
    worst = server.ATTEMPTS * server.TIMEOUT + sum(server.BACKOFF)
    limit = pipeline.NOTIFY_LIMIT
    assert worst < limit


def test_the_log_never_shows_a_url(server):
    lines = []
    send, calls = make_send([200, http_error(404)])
    hooks = [("json", "https://h/secret-token"), ("slack", "https://h/other-secret")]
    server.send_all(hooks, server.facts_for("started", {}, GIVEN), log=lines.append, send=send)
    assert len(calls) == 2 and len(lines) == 2
    assert not any("secret" in line for line in lines)
    assert any("webhook 1 (json)" in line for line in lines) and any("webhook 2 (slack)" in line for line in lines)
