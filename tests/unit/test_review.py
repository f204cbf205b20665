"""Review environments and db.refresh, the pure parts: names, template instantiation,
the front proxy's routes (rendered by pdserver/front.py), what prune picks, the request lines."""

from __future__ import annotations

import re
import subprocess

import pytest

from pushdeploy import plan, protocol, refresh, settings
from pushdeploy import review as reviews

from pdserver import env as server_envs
from pdserver import front as server_front
from pdserver import refresh as server_refresh
from pdserver import review as server_reviews
from pdserver.verbs import review_url

LIB = protocol.SERVER_DIR / "lib"

BASE = {"app": "pixel", "deploy_user": "pd-deploy", "environments": {"staging": {"hosts": "h:22"}}}


def configured(**review) -> settings.Settings:
    raw = {
        "hosts": "h:2222",
        "project": "pixel-review",
        "app_dir": "/srv/pushdeploy/pixel-review",
        "review_template": True,
        "review_domain": "review.example.org",
        "review_port": 8088,
    }
    raw.update(review)
    return settings.from_config({**BASE, "environments": {**BASE["environments"], "review": raw}}, {})


def bash(script: str) -> str:
    """Runs script with protocol.sh sourced (as the entrypoint reads it)."""
    prelude = f'set -euo pipefail; . "{LIB}/protocol.sh"; '
    result = subprocess.run(["bash", "-c", prelude + script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def server_review(name: str, port: str = "8088") -> server_reviews.Review:
    values = {**server_envs.DEFAULTS, "APP_DIR": "/srv/pushdeploy/pixel-review", "PROJECT": "pixel-review"}
    values.update(REVIEW_TEMPLATE="yes", REVIEW_DOMAIN="review.example.org", REVIEW_PORT=port)
    return server_reviews.Review(server_envs.Env("review", "/nonexistent/review.conf", values), name)


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("pr", ["1", "12", "999999", 7])
def test_a_pull_request_number_names_a_review_environment(pr):
    assert reviews.instance(configured().environment("review"), pr).name == f"review-{int(pr)}"


@pytest.mark.parametrize("pr", ["abc", "../x", "0", "012", "-1", "1.5", "1 2", "1;id", "1234567", "", None, "review-1"])
def test_anything_else_is_refused_before_connecting(pr):
    with pytest.raises(plan.BadRequest, match="not a pull request number"):
        reviews.instance(configured().environment("review"), pr)


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("review-1", True),
        ("review-999999", True),
        ("pr2-3", True),
        ("review-abc", False),
        ("review-01", False),
        ("../x", False),
        ("review", False),
        ("review-1-2", False),
        ("staging", False),
        ("review-1234567", False),
        ("Review-1", False),
        ("review-1\n", False),
    ],
)
def test_python_and_bash_agree_on_review_names(name, accepted):
    assert protocol.matches(protocol.REVIEW_RE, name) is accepted
    out = bash(f"[[ {name!r} =~ $PD_REVIEW_RE ]] && echo yes || echo no") if "\n" not in name else "no\n"
    assert out.strip() == ("yes" if accepted else "no")


def test_only_a_template_makes_review_environments():
    config = configured()
    with pytest.raises(plan.BadRequest, match="not a review template"):
        reviews.template(config, "staging")
    assert reviews.template(config).name == "review"


def test_a_template_name_with_a_dash_or_several_hosts_is_a_config_error():
    with pytest.raises(settings.ConfigError, match="no '-'"):
        settings.from_config({**BASE, "environments": {"pr-apps": {"hosts": "h", "review_template": True}}}, {})
    with pytest.raises(settings.ConfigError, match="one host"):
        configured(hosts="a,b")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("sql:scrub.sql", True),
        ("manage:scrub_users", True),
        ("sql:../etc/shadow", False),
        ("sql:missing.sql", False),
        ("manage:rm -rf", False),
        ("sh:x", False),
    ],
)
def test_scrub_is_an_installed_sql_file_or_a_management_command(value, ok):
    def load():
        return configured(scrub=value, files={"scrub.sql": "example/scrub/pixel.sql"})

    if ok:
        assert load().environment("review").scrub == value
    else:
        with pytest.raises(settings.ConfigError, match="scrub"):
            load()


# ------------------------------------------------------------------ the template, instantiated


def test_an_instance_gets_the_templates_names_with_its_number():
    got = reviews.instance(configured().environment("review"), "12")
    assert got == reviews.Instance(
        "review-12",
        12,
        "pixel-review-12",
        "/srv/pushdeploy/pixel-review-12",
        "pr-12.review.example.org",
        "http://pr-12.review.example.org:8088/",
    )
    assert (
        reviews.instance(configured(review_port=80).environment("review"), 3).url == "http://pr-3.review.example.org/"
    )


def test_the_server_derives_the_same_host_and_url():
    on_8088, on_80 = server_review("review-12"), server_review("review-3", port="80")
    out = "\n".join(
        [on_8088.host, review_url(on_8088.template, on_8088.number), review_url(on_80.template, on_80.number)]
    )
    assert out.splitlines() == [
        "pr-12.review.example.org",
        "http://pr-12.review.example.org:8088/",
        "http://pr-3.review.example.org/",
    ]


def test_the_server_conf_of_a_template_says_so_and_others_do_not():
    config = configured(review_max=3, scrub="sql:scrub.sql", files={"scrub.sql": "x.sql"})
    conf = plan.server_conf(config.environment("review"), {})
    for line in (
        "REVIEW_TEMPLATE=yes",
        "REVIEW_DOMAIN=review.example.org",
        "REVIEW_PORT=8088",
        "REVIEW_MAX=3",
        "REVIEW_SEED=fresh",
        "SCRUB=sql:scrub.sql",
    ):
        assert line + "\n" in conf
    assert "REVIEW_" not in plan.server_conf(config.environment("staging"), {})


# ------------------------------------------------------------------ the front proxy's route


def test_the_route_sends_the_pull_requests_host_name_to_its_environment_by_docker_dns():
    out = server_front.render_route(server_review("review-12"))
    assert re.search(r"^\s*server_name pr-12\.review\.example\.org;$", out, re.MULTILINE)
    assert "set $review_upstream review-12;" in out
    assert "proxy_pass http://$review_upstream:80;" in out  # asked per request: the front starts before any environment
    assert "resolver 127.0.0.11" in out
    assert "proxy_set_header Host $host;" in out
    assert out.count("{") == out.count("}")


def test_unknown_host_names_get_a_404_from_the_default_server():
    out = server_front.FRONT_DEFAULT
    assert "listen 80 default_server;" in out and "return 404" in out


# ------------------------------------------------------------------ listing and pruning

LISTING = [
    "review-2\tb2b2b2b\t2026-11-20T10:00:00Z\t2026-11-21T09:00:00Z deploy of b2b2b2b (was none): ok, by ci\thttp://pr-2.d:8088/",
    "review-1\ta1a1a1a\t2026-11-01T10:00:00Z\t2026-11-02T10:00:00Z deploy of a1a1a1a (was none): ok, by ci\thttp://pr-1.d:8088/",
    "review-3\tnone\t2026-11-22T07:00:00Z\tnone\thttp://pr-3.d:8088/",
    "some warning line",
    "../x\tv\t2026-11-01T10:00:00Z\tnone\turl",
]
NOW = reviews._epoch("2026-11-22T08:00:00")


def test_the_listing_is_read_in_pull_request_order_and_junk_is_ignored():
    entries = reviews.parse_list(LISTING)
    assert [e.name for e in entries] == ["review-1", "review-2", "review-3"]
    assert entries[0].last_active == reviews._epoch("2026-11-02T10:00:00")
    assert entries[2].last_active == entries[2].created  # never deployed: its creation counts


@pytest.mark.parametrize(
    ("older_than", "pruned"),
    [
        ("7d", ["review-1"]),
        ("1d", ["review-1"]),
        ("20h", ["review-1", "review-2"]),
        ("1h", ["review-1", "review-2", "review-3"]),
        ("30d", []),
    ],
)
def test_prune_picks_environments_idle_for_at_least_the_age(older_than, pruned):
    chosen = reviews.select_prune(reviews.parse_list(LISTING), reviews.age_seconds(older_than), NOW)
    assert [e.name for e in chosen] == pruned


@pytest.mark.parametrize(
    ("text", "seconds"), [("7d", 604800), ("36h", 129600), ("90m", 5400), ("2w", 1209600), ("45s", 45)]
)
def test_ages(text, seconds):
    assert reviews.age_seconds(text) == seconds


@pytest.mark.parametrize("text", ["7", "d", "7 days", "-1d", "1y", ""])
def test_bad_ages_are_refused(text):
    with pytest.raises(plan.BadRequest, match="older-than"):
        reviews.age_seconds(text)


def test_the_table_shows_pr_version_url_age_and_last_deploy():
    text = reviews.table(reviews.parse_list(LISTING), NOW)
    header, first = text.splitlines()[:2]
    assert header.split()[:6] == ["PR", "ENVIRONMENT", "VERSION", "URL", "AGE", "LAST"]
    assert first.split()[:5] == ["1", "review-1", "a1a1a1a", "http://pr-1.d:8088/", "20d"]


# ------------------------------------------------------------------ request lines


def test_review_request_lines():
    assert (
        reviews.up("review-12", "a1a1a1a", by="ci:x", expect="h.c")
        == "review-up review-12 a1a1a1a --by=ci:x --expect=h.c"
    )
    assert reviews.down("review-12", expect="h.c") == "review-down review-12 --expect=h.c"
    assert reviews.listing("review", expect="h.c") == "review-list review --expect=h.c"
    assert {"review-up", "review-down", "review-list"} <= set(protocol.VERBS)


def test_refresh_request_lines_are_admin_verbs_the_deploy_account_cannot_send():
    assert refresh.dump_command("production", fresh=True) == "db-dump production --fresh"
    assert refresh.dump_command("production", fresh=False) == "db-dump production"
    assert (
        refresh.restore_command("staging", source="production", by="local:me")
        == "db-restore staging --from=production --by=local:me"
    )
    assert set(protocol.ADMIN_VERBS) == {"db-dump", "db-restore"} and not set(protocol.ADMIN_VERBS) & set(
        protocol.VERBS
    )


def test_the_trailer_is_as_long_as_the_server_cuts_off():
    size = server_refresh.TRAILER_BYTES
    assert len(refresh.trailer("0" * 64)) == size


@pytest.mark.parametrize(
    ("scrub", "current", "calls"),
    [
        (
            "manage:scrubdata",
            "abc1234",
            [
                "VERSION=1.4.0 docker compose -p pixel-staging -f docker-compose.yml run --rm --no-deps -T -e PYTHONUNBUFFERED=1 web python3 manage.py migrate --noinput",
                "VERSION=1.4.0 docker compose -p pixel-staging -f docker-compose.yml run --rm --no-deps -T -e PYTHONUNBUFFERED=1 web python3 manage.py scrubdata",
                "VERSION=abc1234 docker compose -p pixel-staging -f docker-compose.yml run --rm --no-deps -T -e PYTHONUNBUFFERED=1 web python3 manage.py migrate --noinput",
            ],
        ),
        (
            "sql:scrub.sql",
            "1.4.0",  # the release the data is of is what serves: nothing to catch up
            [
                "VERSION=1.4.0 docker compose -p pixel-staging -f docker-compose.yml run --rm --no-deps -T -e PYTHONUNBUFFERED=1 web python3 manage.py migrate --noinput",
                'docker compose -p pixel-staging -f docker-compose.yml exec -T db sh -c psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d "$POSTGRES_DB"',
            ],
        ),
    ],
)
def test_restored_data_is_migrated_and_scrubbed_in_its_own_release_before_the_deployed_image_touches_it(
    tmp_path, scrub, current, calls
):
    """Bug #3 of issue 15: the deploy account chooses what runs in staging, so its image
    must not run on unscrubbed production data. The release the data is of (production
    ran it) migrates and scrubs; only then the deployed image migrates what is left."""
    from tests.unit.conftest import server_python

    (tmp_path / "scrub.sql").write_text("UPDATE notes_visit SET path = 'scrubbed';\n")
    result = server_python(
        f"""
        record_commands(versions=True)
        from pdserver import pipeline, refresh
        env = stand_in("staging", APP_DIR={str(tmp_path)!r}, PROJECT="pixel-staging", MANAGE="python3 manage.py",
                       SCRUB={scrub!r}, DB_SERVICE="db")
        run = pipeline.Run(env, "r1", {{}})
        assert refresh.migrate(run, "1.4.0") == 0
        assert refresh.scrub_then_catch_up(run, "1.4.0", {current!r}) == 0
        """,
        calls=tmp_path / "calls",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calls").read_text().splitlines() == calls
