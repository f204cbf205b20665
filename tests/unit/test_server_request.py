"""The server's front door (scripts/server/lib/pdserver): a request's words, the key's
scope, and the refusals that read the server. Pure, or on a temporary /etc/pushdeploy."""

from __future__ import annotations

import json
import subprocess

import pytest

from pushdeploy import protocol, refresh, requests, review

from pdserver import guard, keys
from pdserver.request import Refused, Request, changes_django_setup, parse

NOW = 1_800_000_000.0


def refused(argv, now=NOW) -> str:
    with pytest.raises(Refused) as caught:
        parse(argv, now)
    assert caught.value.code == protocol.EXIT_USAGE
    return str(caught.value)


@pytest.mark.parametrize(
    "line",
    [
        requests.deploy(
            "staging",
            "1.4.0",
            run_id="x",
            by="ci:jane",
            expect="a.b",
            url="https://ci/1",
            order="1700000000",
            wait=30,
            force=True,
            maintenance=True,
            skip_migrate=True,
        ),
        requests.rollback("production", run_id="x", by="jane", expect="a.b", to="1.3.0", wait=5, skip_migrate=True),
        requests.status("staging", expect="a.b"),
        requests.history("staging", limit=5),
        requests.logs("staging", follow=True),
        requests.maintenance("staging", on=True),
        requests.manage("tools", ["showmigrations", "notes", "--list"], expect="a.b", by="jane"),
        requests.plan(
            "staging", "1.4.0", expect="a.b", order="1700000000", maintenance=True, skip_migrate=True, force=True
        ),
        requests.pull_status("staging", expect="a.b"),
        review.up("review-12", "abc1234", by="jane", expect="a.b", url="https://ci/2"),
        review.down("review-12", expect="a.b"),
        review.listing("review", expect="a.b"),
        refresh.dump_command("production", fresh=True),
        refresh.restore_command("staging", source="production", by="jane", url="https://ci/3"),
        "backups staging",
        "check staging",
        "version",
    ],
)
def test_every_request_the_client_builds_passes_the_server(line):
    request = parse(line.split(), NOW)
    assert request.verb == line.split()[0]


def test_a_request_becomes_data():
    request = parse(
        ["--key=ci", "deploy", "staging", "1.4.0", "--id=x", "--wait=030", "--force", "--order=1700000000"], NOW
    )
    assert request == Request(
        "deploy", "staging", ("1.4.0",), {"id": "x", "wait": 30, "force": True, "order": 1700000000}, "ci"
    )
    assert parse(["review-up", "qa-7", "1.0"], NOW).template == "qa"
    assert parse(["review-list", "qa"], NOW).template == "qa"
    assert parse(["status", "qa-7"], NOW).template == ""


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "usage: deploy VERB ENV"),
        (["shell"], "unknown command 'shell'"),
        (["__run2", "staging"], "unknown command"),
        (["deploy", "staging"], "usage: deploy ENV VERSION"),
        (["deploy", "staging", "1.0", "2.0"], "usage: deploy ENV VERSION"),
        (["deploy", "--force", "staging", "1.0"], "usage: deploy ENV VERSION"),
        (["deploy", "Staging", "1.0"], "invalid environment name 'Staging'"),
        (["deploy", "staging", "1;id"], "invalid argument '1;id'"),
        (["deploy", "staging", ".hidden"], "invalid argument"),
        (["deploy", "staging", "1.0", "--id=x/../../tmp/pwned"], "invalid deploy id 'x/../../tmp/pwned'"),
        (["deploy", "staging", "1.0", "--wait=soon"], "unknown option '--wait=soon'"),
        (["deploy", "staging", "1.0", "--force=yes"], "--force takes no value"),
        (["deploy", "staging", "1.0", "--to=0.9"], "unknown option '--to=0.9' for deploy"),
        (["deploy", "staging", "1.0", "--key=production"], "unknown option '--key=production'"),
        (["status", "staging", "--force"], "unknown option '--force' for status"),
        (["maintenance", "staging", "maybe"], "usage: maintenance ENV on|off"),
        (["maintenance", "staging"], "usage: maintenance ENV on|off"),
        (["version", "staging"], "usage: version"),
        (["review-down", "review-abc"], "invalid review environment 'review-abc'"),
        (["review-up", "../x", "1.0"], "invalid review environment '../x'"),
        (["status", "a;b"], "invalid environment name 'a;b'"),
        (["db-restore", "staging"], "usage: db-restore ENV --from=SOURCE"),
        (["db-restore", "staging", "--from=Bad"], "unknown option '--from=Bad'"),
        (["--key=Bad", "status", "staging"], "invalid key name 'Bad'"),
        (["manage", "tools"], "usage: manage ENV"),
        (["manage", "tools", "--plan", "check"], "unknown option"),
        (["manage", "tools", "check", "--settings=evil"], "does not accept the argument '--settings=evil'"),
        (["manage", "tools", "check", "--set=evil"], "does not accept the argument"),
        (["manage", "tools", "check", "--pythonpath=tmp"], "does not accept the argument"),
        (["manage", "tools", "check", "--py"], "does not accept the argument"),
        (["deploy"] + ["a"] * 12, "more than 12 words"),
    ],
)
def test_malformed_requests_are_refused_with_64(argv, says):
    assert says in refused(argv)


def test_a_build_order_at_most_a_day_ahead_of_the_server_clock():
    assert parse(["deploy", "staging", "1.0", f"--order={int(NOW) + 86400}"], NOW).option("order") == int(NOW) + 86400
    assert "more than a day ahead" in refused(["deploy", "staging", "1.0", f"--order={int(NOW) + 86401}"])
    assert "more than a day ahead" in refused(["plan", "staging", "1.0", "--order=9999999999"])


@pytest.mark.parametrize(
    ("word", "changes"),
    [
        ("--settings=x", True),
        ("--settings", True),
        ("--sett=x", True),
        ("--se", True),
        ("--s", True),
        ("--pythonpath=/x", True),
        ("--pyth", True),
        ("--plan", False),
        ("--list", False),
        ("--skip-checks", False),
        ("notes", False),
        ("--database=default", False),
    ],
)
def test_options_that_change_djangos_settings_or_path(word, changes):
    assert changes_django_setup(word) is changes


SCOPES = {
    "review": {"environments": ["review"], "verbs": ["review-up", "review-down", "review-list"]},
    "staging": {
        "environments": ["staging"],
        "verbs": ["deploy", "rollback", "status", "history", "logs", "plan", "check"],
    },
    "production": {"environments": ["production"], "verbs": list(protocol.VERBS)},
}


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("--key=review review-up review-3 abc1234", None),
        ("--key=review review-down review-3", None),
        ("--key=review review-list review", None),
        ("--key=review version", None),
        ("--key=review maintenance production on", "may not run maintenance"),
        ("--key=review deploy production 1.0.0 --force", "may not run deploy"),
        ("--key=review review-up qa-3 abc1234", "may not reach review environments of 'qa'"),
        ("--key=staging deploy staging abc1234", None),
        ("--key=staging deploy production 1.0.0", "may not reach 'production'"),
        ("--key=staging maintenance staging on", "may not run maintenance"),
        ("--key=production maintenance production on", None),
        ("--key=production review-up review-1 abc1234", "may not reach review environments of 'review'"),
        ("--key=ghost status staging", "has no scope on this server"),
        ("--key=production db-dump production", "may not run db-dump"),
        ("status production", None),  # the unnamed key: every environment, as before
    ],
)
def test_a_key_reaches_only_its_environments_and_verbs(line, says):
    why = keys.refusal(parse(line.split(), NOW), keys.parse(json.dumps(SCOPES)))
    assert (why is None) if says is None else (says in why), why


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{",
        '{"Bad": {"environments": [], "verbs": []}}',
        '{"a": {"environments": ["../x"], "verbs": []}}',
        '{"a": {"environments": [], "verbs": ["shell"]}}',
        '{"a": {"environments": "staging", "verbs": []}}',
    ],
)
def test_a_bad_keys_file_is_refused(text):
    with pytest.raises(keys.BadScopes):
        keys.parse(text)


def write_conf(etc, env, **values):
    (etc / f"{env}.conf").write_text("".join(f"{key}={value}\n" for key, value in values.items()))


@pytest.fixture
def etc(tmp_path):
    write_conf(tmp_path, "qa", APP_DIR="/srv/app-qa", PROJECT="app-qa", REVIEW_TEMPLATE="yes")
    write_conf(tmp_path, "qa-2", APP_DIR="/srv/app-qa-2", PROJECT="app-qa-2")
    write_conf(tmp_path, "staging", APP_DIR="/srv/app-qa-5", PROJECT="app-staging")
    write_conf(tmp_path, "other", APP_DIR="/srv/other", PROJECT="app-qa-6")
    return tmp_path


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("review-up qa-3 1.0", None),
        ("review-down qa-3", None),
        ("review-down qa-2", "'qa-2' is an environment of its own"),
        ("review-up qa-2 1.0", "'qa-2' is an environment of its own"),
        ("review-up qa-5 1.0", "which the environment 'staging' uses"),
        ("review-down qa-6", "which the environment 'other' uses"),
    ],
)
def test_review_verbs_reach_only_what_review_up_makes(etc, line, says):
    why = guard.review_target(parse(line.split(), NOW), str(etc))
    assert (why is None) if says is None else (says in why), why


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        ("manage qa check", True),
        ("plan qa 1.0", True),
        ("status qa", True),
        ("deploy qa 1.0", True),
        ("maintenance qa off", True),
        ("history qa", True),
        ("check qa", False),
        ("review-list qa", False),
        ("status qa-2", False),
    ],
)
def test_no_verb_but_check_and_review_runs_against_a_template(etc, line, refused):
    why = guard.template(parse(line.split(), NOW), str(etc))
    assert bool(why) is refused
    assert not why or "is a review template, not an environment" in why


def test_a_key_scope_is_read_from_the_keys_file(tmp_path):
    path = tmp_path / "keys.json"
    request = parse("--key=review deploy staging 1.0".split(), NOW)
    assert "has no scope" in guard.key_scope(request, str(path))  # no file: no named key may do anything
    path.write_text(json.dumps(SCOPES))
    assert "may not run deploy" in guard.key_scope(request, str(path))
    path.write_text("{")
    assert "run `inv server.setup` again" in guard.key_scope(request, str(path))
    assert guard.key_scope(parse("deploy staging 1.0".split(), NOW), str(path)) is None


def test_bin_deploy_refuses_before_handing_over(tmp_path):
    """bin/deploy itself (not installed): a malformed request never reaches the bash verbs."""
    result = subprocess.run(
        ["python3", str(protocol.SERVER_DIR / "bin/deploy"), "deploy", "staging", "1.0", "--order=9999999999"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 64 and "more than a day ahead" in result.stderr and result.stdout == ""
    result = subprocess.run(
        ["python3", str(protocol.SERVER_DIR / "bin/deploy"), "deploy", "nosuchenv", "1.0", "--order=1"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert "is not set up on this server" in result.stderr  # pdserver/env.py reads /etc/pushdeploy
