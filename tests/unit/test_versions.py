"""Which versions each environment accepts: the client refuses before connecting."""

import pytest

from pushdeploy import plan
from pushdeploy.settings import from_config

SETTINGS = from_config(
    {
        "app": "pixel",
        "environments": {
            "staging": {"hosts": ["s.example:22"]},
            "production": {
                "hosts": ["p.example"],
                "version_pattern": "^[0-9]+[.][0-9]+[.][0-9]+(-[0-9A-Za-z.-]+)?$",
                "require_tag": True,
            },
        },
    },
    {},
)
STAGING = SETTINGS.environment("staging")
PRODUCTION = SETTINGS.environment("production")

HOSTILE = [
    "1/;e${IFS}id>x;#",  # makes GNU sed run a command in the seed script
    '1";id;"',
    "1.4.0\n",
    "1.4.0\nid",
    "$(id)",
    "`id`",
    "..",
    "../1.4.0",
    "1" * 300,
    "1.4.０",  # fullwidth digit zero
    "１.4.0",
    "1.4.0\u200b",  # zero-width space
    "1.4.0 ",
    " 1.4.0",
    "-1.4.0",
    "--help",
    "",
    "1.4.0;reboot",
    "1.4.0|id",
    "1.4.0&",
    "v1.4.0*",
]


@pytest.mark.parametrize("tag", HOSTILE)
def test_hostile_tags_are_refused_everywhere(tag):
    for env in (STAGING, PRODUCTION):
        with pytest.raises(plan.BadRequest):
            plan.check_version(env, tag)


@pytest.mark.parametrize("tag", ["1.4.0", "10.0.12", "1.4.0-rc.1", "2.0.0-beta"])
def test_production_accepts_release_tags(tag):
    assert plan.check_version(PRODUCTION, tag) == tag


@pytest.mark.parametrize("tag", ["1.4", "latest", "v1.4.0", "abc1234", "1.4.0.1"])
def test_production_refuses_what_is_not_a_release(tag):
    with pytest.raises(plan.BadRequest, match="version_pattern"):
        plan.check_version(PRODUCTION, tag)


@pytest.mark.parametrize("tag", ["abc1234", "0123456789abcdef0123456789abcdef01234567"])
def test_staging_accepts_commits(tag):
    assert plan.check_version(STAGING, tag) == tag


@pytest.mark.parametrize("tag", ["latest", "ABC1234", "abc12", "1.4.0"])
def test_staging_refuses_moving_or_odd_tags(tag):
    with pytest.raises(plan.BadRequest):
        plan.check_version(STAGING, tag)


@pytest.mark.parametrize(
    ("environ", "head", "expected"),
    [
        ({"CIRCLE_SHA1": "a" * 40}, "b" * 40, "a" * 40),
        ({"GITHUB_SHA": "c" * 40}, None, "c" * 40),
        ({}, "d" * 40, "d" * 40),
    ],
)
def test_build_version_prefers_ci_commit(environ, head, expected):
    assert plan.build_version(environ, head) == expected


def test_build_version_without_any_commit_says_what_to_do():
    with pytest.raises(plan.BadRequest, match="--tag"):
        plan.build_version({}, None)
