"""The proxy's configuration and the switch agree: slots, routing flag, DNS validity."""

import pytest

from pushdeploy import local, plan
from pushdeploy.settings import from_config

GOOD = b"""
server {
    resolver 127.0.0.11 valid=1s ipv6=off;
    location / {
        set $up web-blue;
        if (-f /srv/routing/green) { set $up web-green; }
        proxy_pass http://$up:8000;
    }
}
"""


def environment(**overrides):
    raw = {"hosts": ["h.example"], **overrides}
    return from_config({"app": "pixel", "environments": {"production": raw}}, {}).environment("production")


def test_the_shipped_example_and_invoke_yaml_agree():
    from invoke import Config

    from pushdeploy import protocol

    config = Config(project_location=str(protocol.PROJECT_ROOT))
    config.load_project()
    settings = from_config(config.get("deploy"), {})
    for env in settings.environments.values():
        files = local.app_files(settings, env)
        assert any(name.endswith(".conf") for name in files)
        assert plan.proxy_config_problems(env, files) == [], env.name


def test_a_config_routing_to_the_slots_passes():
    assert plan.proxy_config_problems(environment(), {"nginx/app.conf": GOOD}) == []


@pytest.mark.parametrize(
    ("config", "settings", "problem"),
    [
        (GOOD.replace(b"valid=1s", b"valid=2s"), {}, "has valid=2s, but dns_valid is 1"),
        (GOOD, {"dns_valid": 3}, "has valid=1s, but dns_valid is 3"),
        (GOOD.replace(b" valid=1s", b""), {}, "has no valid=, but dns_valid is 1"),
        (GOOD.replace(b"    resolver 127.0.0.11 valid=1s ipv6=off;\n", b""), {}, "no `resolver` directive"),
        (GOOD.replace(b"web-green", b"web"), {}, "does not route to web-green"),
        (
            b"resolver 127.0.0.11 valid=1s;\nlocation / { set $u http://web:8000; proxy_pass $u; }",
            {},
            "does not route to web-blue",
        ),
        (GOOD.replace(b"/srv/routing/green", b"/srv/flag"), {}, "never checks the routing flag routing/green"),
        (GOOD, {"web_service": "app"}, "does not route to app-blue"),
    ],
)
def test_a_config_that_would_stall_or_miss_the_switch_is_named(config, settings, problem):
    problems = plan.proxy_config_problems(environment(**settings), {"docker/etc/nginx/conf.d/app.conf": config})
    assert any(problem in p for p in problems), problems
    assert all(p.startswith("docker/etc/nginx/conf.d/app.conf: ") for p in problems)


def test_files_without_proxy_pass_are_not_proxy_configs():
    assert (
        plan.proxy_config_problems(environment(), {"docker-compose.yml": b"services: {}", "x.conf": b"gzip on;"}) == []
    )
