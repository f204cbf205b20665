"""Pull mode's pure parts: the setting, pinned versions, the timer-or-cron choice and texts, the agent's records."""

from __future__ import annotations

import importlib.util

import pytest

from pushdeploy import plan, protocol, pull, settings

from pdserver import agent, containers, schema, verbs
from pdserver import order as server_order

LIB = protocol.SERVER_DIR / "lib"
DIGEST = "sha256:" + "3f2a9c1b2d4e" + "0" * 52


def load_pull_py():
    spec = importlib.util.spec_from_file_location("pull_py", LIB / "pull.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ the setting


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ("", 60)),
        ({}, ("", 60)),
        ("production-approved", ("production-approved", 60)),
        ({"channel": "production-approved", "every": 300}, ("production-approved", 300)),
        ({"channel": "staging_ok", "every": "30"}, ("staging_ok", 30)),
    ],
)
def test_pull_setting_gives_channel_and_interval(raw, expected):
    assert pull.parse(raw, "k") == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"channel": "a.b"}, "k.channel"),
        ({"channel": "-x"}, "k.channel"),
        ({"channel": "x;id"}, "k.channel"),
        ({"every": 60}, "k.channel"),
        ({"channel": "x", "every": 5}, "k.every"),
        ({"channel": "x", "every": True}, "k.every"),
        ({"channel": "x", "when": "always"}, "k.when: unknown setting"),
        (["x"], "k: expected"),
    ],
)
def test_bad_pull_settings_name_the_key(raw, problem):
    with pytest.raises(pull.PullError, match=problem.replace(".", r"\.")):
        pull.parse(raw, "k")


@pytest.mark.parametrize("every", [9, 10, 86400, 86401, 1_000_000])
def test_the_client_and_the_server_agree_on_how_often_an_agent_may_check(every):
    """One range, in the settings table: what pull.parse takes, ENV.conf's reader takes."""
    key = schema.KEYS_BY_NAME["PULL_EVERY"]
    try:
        pull.parse({"channel": "x", "every": every}, "k")
        client = True
    except pull.PullError as error:
        assert f"from {key.low} to {key.high}" in str(error)
        client = False
    assert client is (schema.problem(key, str(every)) is None)


def test_settings_reject_a_bad_channel_with_key_and_file():
    config = {"environments": {"production": {"hosts": ["h"], "pull": {"channel": "bad/name"}}}}
    with pytest.raises(settings.ConfigError, match=r"invoke\.yaml: deploy\.environments\.production\.pull\.channel: "):
        settings.from_config(config, {})


def test_pull_lines_reach_the_server_conf_only_in_pull_mode():
    config = {
        "environments": {
            "staging": {"hosts": ["h"]},
            "production": {"hosts": ["h"], "pull": {"channel": "production-approved", "every": 120}},
        }
    }
    loaded = settings.from_config(config, {})
    assert "PULL_" not in plan.server_conf(loaded.environment("staging"), {}), "push setups keep their settings hash"
    assert plan.server_conf(loaded.environment("production"), {}).endswith(
        "PULL_CHANNEL=production-approved\nPULL_EVERY=120\n"
    )


# ------------------------------------------------------------------ pinned versions


def test_pinned_version_is_channel_and_digest_prefix():
    assert pull.pinned_version("production-approved", DIGEST) == "production-approved-3f2a9c1b2d4e"
    with pytest.raises(pull.PullError):
        pull.pinned_version("x", "md5:abc")


@pytest.mark.parametrize(
    ("version", "pinned"),
    [
        ("production-approved-3f2a9c1b2d4e", True),
        ("production-approved-3f2a9c1b2d4", False),
        ("production-approved-3F2A9C1B2D4E", False),
        ("staging-approved-3f2a9c1b2d4e", False),
        ("1.4.0", False),
    ],
)
def test_python_and_bash_agree_on_pinned_versions(version, pinned):
    assert pull.is_pinned("production-approved", version) is pinned
    out = "yes\n" if server_order.is_pinned("production-approved", version) else "no\n"
    assert out.strip() == ("yes" if pinned else "no")


def test_a_semver_environment_in_pull_mode_accepts_pinned_versions_for_rollback():
    config = {
        "environments": {
            "production": {
                "hosts": ["h"],
                "version_pattern": "^[0-9]+[.][0-9]+[.][0-9]+$",
                "pull": "production-approved",
            }
        }
    }
    env = settings.from_config(config, {}).environment("production")
    assert env.accepts("1.4.0") and env.accepts("production-approved-3f2a9c1b2d4e")
    assert not env.accepts("production-approved-zz")
    assert plan.check_version(env, "production-approved-3f2a9c1b2d4e")


# ------------------------------------------------------------------ timer or cron


@pytest.mark.parametrize(
    ("systemd_is_pid_1", "cron_d", "expected"),
    [(True, True, "systemd"), (True, False, "systemd"), (False, True, "cron"), (False, False, "none")],
)
def test_scheduler_is_systemd_where_it_runs_as_pid_1_else_cron(tmp_path, systemd_is_pid_1, cron_d, expected):
    run, cron = tmp_path / "run-systemd-system", tmp_path / "cron.d"
    if systemd_is_pid_1:
        run.mkdir()
    if cron_d:
        cron.mkdir()
    assert agent.scheduler(str(run), str(cron)) == expected


@pytest.mark.parametrize(("every", "minutes"), [(10, 1), (60, 1), (61, 2), (300, 5), (3600, 60)])
def test_cron_runs_every_whole_minute_at_least(every, minutes):
    text = agent.cron_text("staging", every)
    assert (
        f"*/{minutes} * * * * root /opt/pushdeploy/bin/deploy pull staging >>/var/lib/pushdeploy/staging/pull/agent.log 2>&1\n"
        in text
    )


def test_systemd_units_run_the_agent_every_interval():
    service = agent.service_text("production")
    timer = agent.timer_text("production", 45)
    assert "Type=oneshot\nExecStart=/opt/pushdeploy/bin/deploy pull production\n" in service
    assert "OnBootSec=45s\nOnUnitActiveSec=45s\n" in timer and "WantedBy=timers.target" in timer
    assert agent.unit("production") == "pushdeploy-pull-production"


def test_agent_location_is_reported_from_the_installed_files(tmp_path):
    systemd, cron = tmp_path / "systemd", tmp_path / "cron.d"
    systemd.mkdir()
    cron.mkdir()
    assert verbs.pull_agent_where("staging", str(systemd), str(cron)) == "none"
    (cron / "pushdeploy-pull-staging").write_text("")
    assert verbs.pull_agent_where("staging", str(systemd), str(cron)) == f"cron {cron}/pushdeploy-pull-staging"


# ------------------------------------------------------------------ the agent's records


def test_last_tried_digest_skips_errors_and_busy_checks(tmp_path):
    tool = load_pull_py()
    checks = str(tmp_path / "checks.jsonl")
    assert tool.last_digest(tool.read(checks)) == ""
    tool.record(checks, ["result=deployed", "digest=sha256:aa", "version=c-aa"])
    tool.record(checks, ["result=error", "digest=", "message=registry down"])
    tool.record(checks, ["result=busy", "digest=", "version=c-bb"])
    assert tool.last_digest(tool.read(checks)) == "sha256:aa"
    tool.record(checks, ["result=failed", "digest=sha256:bb", "version=c-bb"])
    assert tool.last_digest(tool.read(checks)) == "sha256:bb", "a failed image is tried once, not every minute"


def test_checks_are_bounded(tmp_path):
    tool = load_pull_py()
    checks = str(tmp_path / "checks.jsonl")
    for n in range(tool.KEEP + 20):
        tool.record(checks, ["result=unchanged", f"digest=sha256:{n}"])
    kept = tool.read(checks)
    assert len(kept) == tool.KEEP and kept[-1]["digest"] == f"sha256:{tool.KEEP + 19}"


def test_running_digest_comes_from_the_last_successful_deploy_of_that_version():
    tool = load_pull_py()
    history = [
        {"version": "v1", "outcome": "ok", "digest": "sha256:1"},
        {"version": "v1", "outcome": "failed", "digest": "sha256:x"},
    ]
    assert tool.running_digest(history, "v1") == "sha256:1"
    assert tool.running_digest(history, "v2") == ""


def test_status_shows_the_last_check_and_the_last_change():
    tool = load_pull_py()
    records = [
        {"time": "T1", "result": "deployed", "version": "c-aa", "message": "deployed c-aa"},
        {"time": "T2", "result": "unchanged", "version": "c-aa", "message": "still sha256:aa"},
    ]
    lines = tool.status(records, ["mode=pull", "channel=c"])
    assert lines == [
        "mode: pull",
        "channel: c",
        "last check: T2 unchanged c-aa: still sha256:aa",
        "last change: T1 deployed c-aa: deployed c-aa",
    ]
    assert tool.status([], ["mode=pull"])[-1] == "last check: never (the agent has not run yet)"


# ------------------------------------------------------------------ the web image, from compose's canonical YAML

CONFIG_V2 = """name: pixel-staging
services:
  db:
    image: 127.0.0.1:5000/pushdeploy/postgres:15
  proxy:
    image: nginx:1.27
  web:
    environment:
      IMAGE_NOTE: "image: not this one"
    image: 127.0.0.1:5000/pixel:staging-approved
    volumes:
      - static:/srv/static
volumes:
  static: {}
"""
CONFIG_V1 = """services:
  web:
    image: 'registry.example.org:443/team/pixel:staging-approved'
  worker:
    image: other:staging-approved
version: '3.8'
"""


@pytest.mark.parametrize(
    ("config", "service", "ref"),
    [
        (CONFIG_V2, "web", "127.0.0.1:5000/pixel:staging-approved"),
        (CONFIG_V1, "web", "registry.example.org:443/team/pixel:staging-approved"),
        (CONFIG_V1, "worker", "other:staging-approved"),
        (CONFIG_V2, "app", ""),
    ],
)
def test_web_image_is_read_from_the_web_service_only(config, service, ref):
    out = containers.image_of(config, service)
    assert out.strip() == ref
