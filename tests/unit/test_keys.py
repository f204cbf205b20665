"""Deploy keys, least privilege: invoke.yaml's deploy.keys become authorized_keys lines
naming each key, the server's scopes file, and a line of the settings hash."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from pushdeploy import local, plan, protocol
from pushdeploy.settings import ConfigError, from_config

from pdserver import keys as server_keys
from pdserver.request import parse

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1f0Q6pRzBvSpLx8pD1x0nB6Kq6m7A0dQ9f6o4mR0Zp ci@example"
REVIEW_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC2g1R7qSaCwTqMy9qE2y1oC7Lr7n8B1eR0g7p5nS1Aq review@example"
ENVS = {
    "staging": {"hosts": "h"},
    "production": {"hosts": "h"},
    "review": {"hosts": "h", "review_template": True, "review_domain": "review.example"},
}


def settings(keys=None, environments=ENVS):
    return from_config({"app": "pixel", "deploy_user": "deploy", "environments": environments, "keys": keys}, {})


SCOPED = {
    "review": {
        "environments": ["review"],
        "verbs": ["review-up", "review-down", "review-list"],
        "public_key": REVIEW_KEY,
    },
    "staging": {"environments": "staging"},
}


def test_named_keys_with_their_scopes():
    loaded = settings(SCOPED)
    assert [(k.name, k.environments, k.verbs) for k in loaded.keys] == [
        ("review", ("review",), ("review-up", "review-down", "review-list")),
        ("staging", ("staging",), protocol.VERBS),
    ]
    assert loaded.keys[1].env_var == "DEPLOY_KEY_STAGING_PUBLIC_KEY"
    assert settings().keys == ()


@pytest.mark.parametrize(
    ("keys", "where"),
    [
        ({"Review": {"environments": ["review"]}}, "deploy.keys.Review"),
        ({"review": {"environments": ["qa"]}}, "deploy.keys.review.environments"),
        ({"review": {"environments": []}}, "deploy.keys.review.environments"),
        ({"review": {"environments": ["review"], "verbs": ["db-dump"]}}, "deploy.keys.review.verbs"),
        ({"review": {"environments": ["review"], "verbs": ["shell"]}}, "deploy.keys.review.verbs"),
        ({"review": {"environments": ["review"], "scope": "all"}}, "deploy.keys.review.scope"),
        (["review"], "deploy.keys"),
    ],
)
def test_bad_keys_name_the_setting(keys, where):
    with pytest.raises(ConfigError) as caught:
        settings(keys)
    assert caught.value.key == where


def test_an_environment_named_like_a_templates_review_environment_is_refused():
    with pytest.raises(ConfigError, match="named like a review environment of the template 'review'"):
        settings(environments={**ENVS, "review-2": {"hosts": "h"}})
    assert settings(environments={**ENVS, "staging-2": {"hosts": "h"}})  # staging is no template


def test_each_named_key_line_passes_its_name_to_the_entrypoint():
    text = plan.authorized_keys(KEY, {"review": REVIEW_KEY})
    assert (
        text
        == f'restrict,command="/opt/pushdeploy/bin/entrypoint" {KEY}\nrestrict,command="/opt/pushdeploy/bin/entrypoint --key=review" {REVIEW_KEY}\n'
    )
    assert plan.authorized_keys("", {"review": REVIEW_KEY}).count("\n") == 1  # named keys only
    with pytest.raises(plan.BadRequest, match="DEPLOY_KEY_STAGING_PUBLIC_KEY"):
        plan.authorized_keys(KEY, {"staging": ""})
    with pytest.raises(plan.BadRequest, match="not an OpenSSH public key"):
        plan.authorized_keys(KEY, {"review": 'ssh-ed25519 AAAA x"\ncommand="sh"'})


def test_public_keys_come_from_dotenv_first_then_invoke_yaml(tmp_path):
    loaded = settings(SCOPED)
    (tmp_path / "staging.pub").write_text(KEY + "\n")
    assert local.named_public_keys(loaded, {"DEPLOY_KEY_STAGING_PUBLIC_KEY": str(tmp_path / "staging.pub")}) == {
        "review": REVIEW_KEY,
        "staging": KEY + "\n",
    }
    with pytest.raises(ConfigError, match="neither a public key nor an existing file"):
        local.named_public_keys(loaded, {"DEPLOY_KEY_STAGING_PUBLIC_KEY": str(tmp_path / "missing.pub")})


def test_the_bundle_carries_the_scopes_the_server_reads_and_the_settings_hash_covers_them():
    loaded = settings(SCOPED)
    env = loaded.environment("staging")
    bundle = plan.bundle(
        env, protocol.server_side(), {}, None, KEY, None, loaded.keys, {"review": REVIEW_KEY, "staging": KEY}
    )
    with tarfile.open(fileobj=io.BytesIO(bundle.tar())) as archive:
        scopes = archive.extractfile("keys.json").read().decode()
    parsed = server_keys.parse(scopes)  # the server's own reader
    assert parsed["review"] == server_keys.Scope(("review",), ("review-up", "review-down", "review-list"))
    assert "public_key" not in scopes and "AAAA" not in scopes
    assert server_keys.refusal(parse("--key=review maintenance production on".split(), 0), parsed)
    conf = plan.server_conf(env, {}, loaded.keys)
    assert conf.endswith(f"KEYS_SHA256={protocol.short_hash(scopes.encode())}\n")
    narrower = settings({**SCOPED, "staging": {"environments": ["staging"], "verbs": ["status"]}})
    assert plan.server_conf(env, {}, narrower.keys) != conf, "a narrower scope is a different settings hash"
    assert "KEYS_SHA256" not in plan.server_conf(env, {}), "no named keys: the settings hash is as before"
    assert json.loads(scopes)["staging"]["verbs"] == list(protocol.VERBS)


def test_restore_db_is_a_right_a_key_has_only_when_its_verbs_list_it():
    """A key given every verb may roll back, but not replace the database (--restore-db),
    unless `restore-db` is listed among its verbs."""
    loaded = settings(
        {
            "staging": {"environments": ["staging"]},
            "oncall": {"environments": ["production"], "verbs": ["rollback", "plan", "restore-db"]},
        }
    )
    scopes = server_keys.parse(_scopes(loaded.keys))
    assert "restore-db" not in scopes["staging"].verbs
    every = server_keys.refusal(parse("--key=staging rollback staging --restore-db --id=x".split(), 0), scopes)
    assert every == "the key 'staging' may not use --restore-db (list restore-db in its verbs to allow it)"
    assert server_keys.refusal(parse("--key=staging rollback staging --id=x".split(), 0), scopes) is None
    assert server_keys.refusal(parse("--key=oncall rollback production --restore-db".split(), 0), scopes) is None
    assert server_keys.refusal(parse("--key=oncall plan production --rollback --restore-db".split(), 0), scopes) is None


def _scopes(keys) -> str:
    from pushdeploy import keys as deploy_keys

    return deploy_keys.scopes_json(keys)
