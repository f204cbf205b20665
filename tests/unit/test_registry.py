"""A private registry: the `registry:` setting, the password's variables, what server.setup
sends, and how the server's docker commands find the login (every pull, the pull agent,
review environments, swarm's --with-registry-auth) and say a refusal."""

from __future__ import annotations

import pytest

from pushdeploy import plan, protocol, registry
from pushdeploy.settings import ConfigError, from_config

from pdserver import compose, containers, stackfile
from pdserver import env as envs

GOOD = {"server": "registry.example.com:5443", "user": "deploy-bot", "ca": "certs/ca.crt"}


def settings(**reg):
    return from_config({"environments": {"production": {"hosts": ["h.example"], "registry": reg}}}, {})


def test_a_registry_becomes_the_environments_settings_and_two_lines_of_its_server_conf():
    env = settings(**GOOD).environment("production")
    assert (env.registry_server, env.registry_user, env.registry_ca) == (
        "registry.example.com:5443",
        "deploy-bot",
        "certs/ca.crt",
    )
    conf = plan.server_conf(env, {})
    assert "REGISTRY=registry.example.com:5443\nREGISTRY_USER=deploy-bot\n" in conf
    assert "REGISTRY" not in plan.server_conf(
        from_config({"environments": {"s": {"hosts": ["h"]}}}, {}).environment("s"), {}
    )


@pytest.mark.parametrize(
    ("reg", "key", "says"),
    [
        ({**GOOD, "password": "hunter2"}, "registry.password", "never in invoke.yaml"),
        ({**GOOD, "server": "https://registry.example.com"}, "registry.server", "host[:port]"),
        ({**GOOD, "server": "Registry.Example.com"}, "registry.server", "host[:port]"),
        ({**GOOD, "user": "bot; id"}, "registry.user", "not a user name"),
        ({**GOOD, "user": ""}, "registry.user", "not a user name"),
        ({**GOOD, "ca": ["a", "b"]}, "registry.ca", "CA certificate"),
    ],
)
def test_bad_registry_settings_name_the_key(reg, key, says):
    with pytest.raises(ConfigError) as error:
        settings(**reg)
    assert error.value.key == f"deploy.environments.production.{key}"
    assert says in str(error.value)
    assert "hunter2" not in str(error.value)


def test_the_password_comes_from_the_environments_variable_first_and_is_one_line():
    assert registry.variable("review-3") == "DEPLOY_REVIEW_3_REGISTRY_PASSWORD"
    assert registry.password({}, "production") is None  # the hosts keep their login
    assert registry.password({"DEPLOY_REGISTRY_PASSWORD": "a"}, "production") == b"a"
    both = {"DEPLOY_REGISTRY_PASSWORD": "a", "DEPLOY_PRODUCTION_REGISTRY_PASSWORD": "b"}
    assert registry.password(both, "production") == b"b"
    for bad, says in (("", "is empty"), ("sesame\nopen", "line break")):
        with pytest.raises(registry.RegistryError, match=says) as error:
            registry.password({"DEPLOY_REGISTRY_PASSWORD": bad}, "production")
        assert "sesame" not in str(error.value)


def test_the_bundle_carries_a_password_and_a_ca_only_when_given():
    env = settings(**GOOD).environment("production")
    server = protocol.server_side()
    files = plan.bundle(
        env, server, {}, None, "ssh-ed25519 AAAA k", registry_password=b"s3cret", registry_ca=b"-----BEGIN"
    ).files
    assert files["registry-password"] == b"s3cret" and files["registry-ca.crt"] == b"-----BEGIN"
    assert not {"registry-password", "registry-ca.crt"} & set(
        plan.bundle(env, server, {}, None, "ssh-ed25519 AAAA k").files
    )
    assert registry.ca_problem(b"\n-----BEGIN CERTIFICATE-----\n") == ""
    assert "not a PEM certificate" in registry.ca_problem(b"ssh-ed25519 AAAA")


def server_env(tmp_path, name="production", **values) -> envs.Env:
    lines = {"APP_DIR": str(tmp_path), "PROJECT": "pixel", **values}
    text = "".join(f"{key}={value}\n" for key, value in lines.items())
    return envs.Env(name, f"/etc/pushdeploy/{name}.conf", envs.parse(text, "x.conf", name))


def test_every_docker_command_of_an_environment_with_a_registry_reads_its_login(tmp_path):
    env = server_env(tmp_path, REGISTRY="registry.example.com:5443", REGISTRY_USER="bot")
    assert compose.docker(env, "pull", "x").environ == {"DOCKER_CONFIG": "/etc/pushdeploy/production.docker"}
    assert compose.compose(env, "pull", "web").environ["DOCKER_CONFIG"] == "/etc/pushdeploy/production.docker"
    # A review environment is its template's settings under another name: the template's login.
    review = envs.Env("review-3", "/etc/pushdeploy/review.conf", env.values)
    assert compose.docker(review, "pull", "x").environ["DOCKER_CONFIG"] == "/etc/pushdeploy/review.docker"
    assert "DOCKER_CONFIG" not in compose.docker(server_env(tmp_path), "pull", "x").environ


def test_a_swarm_passes_the_login_to_its_nodes_only_with_a_registry(tmp_path):
    with_login = stackfile.deploy_args(server_env(tmp_path, REGISTRY="r.example", REGISTRY_USER="bot"))
    assert with_login[:4] == ["stack", "deploy", "--resolve-image", "always"] and "--with-registry-auth" in with_login
    assert "--with-registry-auth" not in stackfile.deploy_args(server_env(tmp_path))


def test_the_server_refuses_a_registry_it_would_not_write(tmp_path):
    with pytest.raises(envs.Refused, match="invalid REGISTRY"):
        server_env(tmp_path, REGISTRY="r.example; id", REGISTRY_USER="bot")


@pytest.mark.parametrize(
    ("values", "out", "says"),
    [
        (
            {"REGISTRY": "r.example", "REGISTRY_USER": "bot"},
            "Error response from daemon: unauthorized: authentication required",
            "the registry r.example refused the login of bot (Error response from daemon: unauthorized: "
            "authentication required). Nothing was changed. If the password was rotated or expired, set the new "
            "one in DEPLOY_REGISTRY_PASSWORD and run `inv server.setup --env production`",
        ),
        (
            {},
            "Error response from daemon: pull access denied for r.example/pixel",
            "its registry wants a login (Error response from daemon: pull access denied for r.example/pixel). "
            "Nothing was changed. Set registry: (server, user) in invoke.yaml",
        ),
        ({}, "manifest unknown", "could not pull web at 1.4.0 (manifest unknown): is it pushed"),
    ],
)
def test_a_failed_pull_says_why_and_what_to_do(tmp_path, values, out, says):
    assert says in containers.pull_failure(server_env(tmp_path, **values), "web at 1.4.0", out)


def test_config_show_names_the_registry_and_hides_its_password():
    from pushdeploy import provenance

    loaded = settings(**GOOD)
    rows = dict(
        (name, value) for name, value, _ in provenance.environment_rows(loaded, loaded.environment("production"))
    )
    assert rows["registry"] == "deploy-bot@registry.example.com:5443, CA certs/ca.crt"
    shown = provenance.access_rows({"DEPLOY_REGISTRY_PASSWORD": "hunter2"}, ".env", {})
    assert shown == [("DEPLOY_REGISTRY_PASSWORD", "(set, not shown)", ".env")]
