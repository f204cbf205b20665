"""HTTPS at the proxy (issue 17, part 4): the `tls:` setting, the ENV.conf keys both sides read,
what the server writes for nginx and compose, how it checks a certificate and key (real ones,
made with openssl), when it reloads the proxy and what server.check says of the expiry."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from pushdeploy import plan, tls
from pushdeploy.settings import ConfigError, from_config

from pdserver import compose
from pdserver import env as envs
from pdserver import tls as server_tls

GOOD = {"certificate": "/etc/ssl/pixel/fullchain.pem", "key": "/etc/ssl/pixel/privkey.pem"}


def settings(tls_setting, **more):
    env = {"hosts": ["h.example"], "tls": tls_setting, **more}
    return from_config({"environments": {"production": env}}, {})


def test_tls_becomes_the_environments_settings_and_lines_of_its_server_conf():
    env = settings({**GOOD, "publish": "127.0.0.1:8443", "hsts": 31536000}).environment("production")
    assert env.tls == tls.Tls("files", GOOD["certificate"], GOOD["key"], "127.0.0.1:8443", 31536000, True)
    conf = plan.server_conf(env, {})
    assert (
        "TLS=files\nTLS_CERTIFICATE=/etc/ssl/pixel/fullchain.pem\nTLS_KEY=/etc/ssl/pixel/privkey.pem\n"
        "TLS_PUBLISH=127.0.0.1:8443\nTLS_HSTS=31536000\nTLS_REDIRECT=yes\n"
    ) in conf
    plain = settings(None).environment("production")
    assert plain.tls == tls.OFF and "TLS" not in plan.server_conf(plain, {})


@pytest.mark.parametrize(
    ("setting", "key", "says"),
    [
        ("yes", "tls", "expected {certificate: PATH"),
        ({**GOOD, "acme": {}}, "tls.acme", "not both"),
        ({"key": GOOD["key"]}, "tls.certificate", "absolute path of the certificate"),
        ({**GOOD, "certificate": "certs/fullchain.pem"}, "tls.certificate", "absolute path"),
        ({**GOOD, "key": "/etc/ssl/../shadow"}, "tls.key", "absolute path"),
        ({**GOOD, "key": "/etc/ssl/key;id"}, "tls.key", "absolute path"),
        ({**GOOD, "publish": "0"}, "tls.publish", "PORT or ADDRESS:PORT"),
        ({**GOOD, "publish": "70000"}, "tls.publish", "PORT or ADDRESS:PORT"),
        ({**GOOD, "publish": "localhost:443"}, "tls.publish", "PORT or ADDRESS:PORT"),
        ({**GOOD, "publish": "999.0.0.1:443"}, "tls.publish", "PORT or ADDRESS:PORT"),
        ({**GOOD, "hsts": True}, "tls.hsts", "seconds from 0"),
        ({**GOOD, "hsts": 63072001}, "tls.hsts", "seconds from 0"),
        ({**GOOD, "redirect": "no"}, "tls.redirect", "true or false"),
    ],
)
def test_bad_tls_settings_name_the_key(setting, key, says):
    with pytest.raises(ConfigError) as error:
        settings(setting)
    assert error.value.key == f"deploy.environments.production.{key}"
    assert says in str(error.value)


def test_tls_folder_of_the_app_dir_is_pushdeploys():
    with pytest.raises(ConfigError, match="tls/ in app_dir is pushdeploy's"):
        settings(GOOD, files={"tls/extra.conf": "x.conf"})


def test_tls_is_refused_where_no_compose_proxy_serves_it():
    with pytest.raises(ConfigError, match="set manager_compose_files"):
        settings(GOOD, engine="swarm")
    swarm = settings(GOOD, engine="swarm", manager_compose_files=["docker-compose.proxy.yml"])
    assert swarm.environment("production").tls.mode == "files"
    with pytest.raises(ConfigError, match="needs proxy_service"):
        settings(GOOD, proxy_service="")


def test_the_nginx_files_must_include_pushdeploys_lines():
    env = settings(GOOD).environment("production")
    assert "include /etc/nginx/pushdeploy/*.conf;" in tls.include_problem(env.tls, {"a.conf": b"server {}"})
    assert tls.include_problem(env.tls, {"a.conf": b"server {\n  include  /etc/nginx/pushdeploy/*.conf;\n}"}) == ""
    assert tls.include_problem(tls.OFF, {}) == ""


# ------------------------------------------------------------------ the server


def server_env(tmp_path, name="production", **values) -> envs.Env:
    lines = {"APP_DIR": str(tmp_path / "app"), "PROJECT": "pixel", "PROXY_SERVICE": "proxy", **values}
    text = "".join(f"{key}={value}\n" for key, value in lines.items())
    return envs.Env(name, f"/etc/pushdeploy/{name}.conf", envs.parse(text, "x.conf", name))


def test_the_server_refuses_tls_settings_it_would_not_write(tmp_path):
    for values, says in (
        ({"TLS": "files"}, "TLS needs TLS_CERTIFICATE"),
        ({"TLS": "acme"}, "TLS=acme needs TLS_ACME_DOMAINS"),
        ({"TLS": "sometimes"}, "TLS is off, files or acme"),
        ({"TLS": "acme", "TLS_ACME_DOMAINS": "pixel.example", "TLS_ACME_EMAIL": "a@b"}, "e-mail address"),
        ({"TLS": "acme", "TLS_ACME_DOMAINS": "*.pixel.example", "TLS_ACME_EMAIL": "a@b.c"}, "host names"),
        (
            {
                "TLS": "acme",
                "TLS_ACME_DOMAINS": "p.example",
                "TLS_ACME_EMAIL": "a@b.c",
                "TLS_ACME_DIRECTORY": "http://x",
            },
            "https://",
        ),
        ({"TLS": "files", "TLS_CERTIFICATE": "/a", "TLS_KEY": "/b", "PROXY_SERVICE": ""}, "PROXY_SERVICE"),
        ({"TLS": "files", "TLS_CERTIFICATE": "a.pem", "TLS_KEY": "/b"}, "absolute path"),
        ({"TLS": "files", "TLS_CERTIFICATE": "/a", "TLS_KEY": "/b", "TLS_PUBLISH": "99999"}, "1 to 65535"),
        ({"TLS": "files", "TLS_CERTIFICATE": "/a", "TLS_KEY": "/b", "TLS_PUBLISH": "443 -v /:/x"}, "TLS_PUBLISH"),
    ):
        with pytest.raises(envs.Refused, match=says):
            server_env(tmp_path, **values)


def test_the_snippet_serves_https_redirects_plain_http_but_acme_and_sends_hsts_on_https_only():
    text = server_tls.snippet(31536000, True)
    assert "listen 443 ssl;" in text and "ssl_certificate /etc/nginx/pushdeploy/cert.pem;" in text
    assert "if ($pushdeploy_redirect = http) { return 308 https://$host$request_uri; }" in text
    assert 'if ($uri ~ "^/\\.well-known/acme-challenge/") { set $pushdeploy_redirect acme; }' in text
    assert 'if ($scheme = https) { set $pushdeploy_hsts "max-age=31536000"; }' in text
    plain = server_tls.snippet(0, False)
    assert "return 308" not in plain and "Strict-Transport-Security" not in plain


def test_compose_commands_add_the_proxys_tls_file_once_installed(tmp_path):
    on = server_env(tmp_path, TLS="files", TLS_CERTIFICATE="/c.pem", TLS_KEY="/k.pem", TLS_PUBLISH="127.0.0.1:8443")
    assert "tls/compose.yml" not in compose.compose(on, "up").argv  # refused at setup: the proxy as it was
    assert server_tls.compose_digest(on) == ""
    (tmp_path / "app/tls").mkdir(parents=True)
    (tmp_path / "app/tls/compose.yml").write_text(server_tls.compose_text("proxy", "127.0.0.1:8443"))
    assert len(server_tls.compose_digest(on)) == 16
    argv = compose.compose(on, "up", "-d").argv
    assert argv[argv.index("-p") :] == ["-p", "pixel", "-f", "docker-compose.yml", "-f", "tls/compose.yml", "up", "-d"]
    assert "tls/compose.yml" not in compose.compose(server_env(tmp_path), "up").argv
    assert server_tls.compose_text("proxy", "127.0.0.1:8443") == (
        "# Written by pushdeploy (tls: in invoke.yaml): the proxy serves HTTPS.\n"
        "services:\n  proxy:\n    ports:\n"
        '      - "127.0.0.1:8443:443"\n'
        "    volumes:\n      - ./tls:/etc/nginx/pushdeploy:ro\n"
    )


def make_pair(folder, name="site", days=90, key_mode=0o600):
    """A self-signed certificate for localhost and its key, made by openssl: (cert, key) paths."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", "/CN=localhost"],
        check=True,
        capture_output=True,
    )
    os.chmod(key, key_mode)
    return str(cert), str(key)


def encrypted_key(folder, key):
    out = folder / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", key, "-aes256", "-passout", "pass:sesame", "-out", str(out)],
        check=True,
        capture_output=True,
    )
    os.chmod(out, 0o600)
    return str(out)


@pytest.fixture
def pair(tmp_path):
    return make_pair(tmp_path)


def tls_env(tmp_path, cert, key, **more):
    return server_env(tmp_path, TLS="files", TLS_CERTIFICATE=cert, TLS_KEY=key, **more)


def test_a_pair_is_read_only_when_nginx_could_serve_it(tmp_path, pair):
    cert, key = pair
    assert server_tls.read_pair(cert, key)[0].startswith(b"-----BEGIN CERTIFICATE-----")
    other_cert, other_key = make_pair(tmp_path, "other")
    loose_cert, loose_key = make_pair(tmp_path, "loose", key_mode=0o644)
    for args, says in (
        ((cert, other_key), "are not a pair"),
        ((cert, str(tmp_path / "missing.key")), "cannot be read (No such file or directory)"),
        ((str(tmp_path), key), "is not a file"),
        ((loose_cert, loose_key), f"chmod 600 {loose_key}"),
        ((key, key), "holds no PEM certificate"),
        ((cert, encrypted_key(tmp_path, key)), "is encrypted: nginx reads keys without a passphrase"),
    ):
        with pytest.raises(server_tls.TlsError, match=re.escape(says)):
            server_tls.read_pair(*args)


def test_install_writes_root_only_files_once_and_removes_them_without_tls(tmp_path, pair):
    env = tls_env(tmp_path, *pair, TLS_HSTS="600")
    os.makedirs(env.app_dir)
    assert server_tls.install(env) is True
    folder = tmp_path / "app" / "tls"
    assert sorted(os.listdir(folder)) == ["cert.pem", "compose.yml", "key.pem", "tls.conf"]
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    assert {oct(os.stat(folder / name).st_mode & 0o777) for name in os.listdir(folder)} == {"0o600"}
    assert "max-age=600" in (folder / "tls.conf").read_text()
    before = server_tls.digest(env)
    assert server_tls.install(env) is False and server_tls.digest(env) == before
    renewed = make_pair(tmp_path, "renewed")
    assert server_tls.install(tls_env(tmp_path, *renewed)) is True and server_tls.digest(env) != before
    assert server_tls.install(server_env(tmp_path)) is True and os.listdir(folder) == []
    assert server_tls.digest(server_env(tmp_path)) == ""


def test_a_bad_pair_changes_nothing(tmp_path, pair):
    env = tls_env(tmp_path, *pair)
    os.makedirs(env.app_dir)
    server_tls.install(env)
    before = {name: (tmp_path / "app/tls" / name).read_bytes() for name in server_tls.FILES}
    other = make_pair(tmp_path, "other")
    with pytest.raises(server_tls.TlsError):
        server_tls.install(tls_env(tmp_path, pair[0], other[1]))
    assert {name: (tmp_path / "app/tls" / name).read_bytes() for name in server_tls.FILES} == before


def test_server_check_says_when_the_certificate_ends_and_warns_within_14_days(tmp_path):
    os.makedirs(tmp_path / "app")
    soon = tls_env(tmp_path, *make_pair(tmp_path, "soon", days=10))
    server_tls.install(soon)
    found = server_tls.expiry(soon)
    assert found["tls_days_left"] in (9, 10) and "ends " in found["tls"]
    assert "renew /" in found["tls_warning"] and "tls-reload production" in found["tls_warning"]
    later = server_tls.expiry(soon, now=time.time() - 30 * 86400)
    assert "tls_warning" not in later
    assert server_tls.expiry(server_env(tmp_path)) == {}


def test_apply_reloads_the_proxy_only_when_what_it_serves_changed(tmp_path, pair, monkeypatch, capsys):
    env = tls_env(tmp_path, *pair)
    os.makedirs(env.app_dir)
    monkeypatch.setattr(envs.Env, "state_dir", property(lambda self: str(tmp_path / "state")))
    os.makedirs(tmp_path / "state")
    reloads = []
    assert server_tls.apply(env, lambda e: reloads.append(e.name) or True) == 0
    assert server_tls.apply(env, lambda e: reloads.append(e.name) or True) == 0
    assert reloads == ["production"]
    assert server_tls.apply(tls_env(tmp_path, pair[0], "/nowhere.key"), lambda e: True) == 1
    assert "tls: the key /nowhere.key cannot be read" in capsys.readouterr().out


def test_tls_reload_is_roots_alone(monkeypatch, capsys):
    from pdserver import facts, main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main.main(["tls-reload", "production"]) == facts.EXIT_USAGE
    assert "tls-reload is root's" in capsys.readouterr().err


def test_the_plan_says_when_the_certificate_ends_or_why_a_deploy_would_refuse_it(tmp_path):
    cert, key = make_pair(tmp_path, "plan", days=10)
    line = server_tls.plan_line(tls_env(tmp_path, cert, key))
    assert line.startswith(f"certificate {cert}, ends ") and line.endswith("fewer than 14 days left")
    assert "(9 days)" in line or "(10 days)" in line
    os.chmod(key, 0o640)
    assert server_tls.plan_line(tls_env(tmp_path, cert, key)) == (
        f"refused: the key {key} must be root's alone: chown root {key} && chmod 600 {key}"
    )


def test_a_review_template_serves_a_wildcard_certificate_at_its_front(tmp_path, pair, monkeypatch):
    monkeypatch.setattr(envs.Env, "state_dir", property(lambda self: str(tmp_path / "state" / self.name)))
    template = settings(GOOD, review_template=True, review_domain="review.example.com").environment("production")
    assert template.tls.mode == "files"
    with pytest.raises(ConfigError, match="a review template's front serves one certificate"):
        settings({"acme": {"domains": ["a.example.com"], "email": "a@example.com"}}, review_template=True)
    from pdserver import front, verbs
    from pdserver.review import Review

    env = tls_env(tmp_path, *pair, REVIEW_TEMPLATE="yes", REVIEW_DOMAIN="review.example.com", TLS_PUBLISH="8443")
    review = Review(env, "production-7")
    assert review.env["TLS"] == "off"  # the instance serves plain HTTP behind the front
    assert "include /etc/nginx/pushdeploy/*.conf;" in front.render_route(review)
    assert verbs.review_url(env, "7") == "https://pr-7.review.example.com:8443/"
    plain = server_env(tmp_path, REVIEW_TEMPLATE="yes", REVIEW_DOMAIN="review.example.com")
    assert "include" not in front.render_route(Review(plain, "production-7"))
    assert verbs.review_url(plain, "7") == "http://pr-7.review.example.com:8088/"
    assert "ssl_reject_handshake on;" in front.FRONT_DEFAULT_TLS  # an unknown host: no other PR's site
    os.makedirs(env.state_dir, exist_ok=True)
    assert front.install_tls(env)[:2] == ["-p", "8443:443"]
    assert sorted(os.listdir(front.folder_of(env))) == ["cert.pem", "key.pem", "tls.conf"]
    assert "ends " in server_tls.expiry(env)["tls"]  # check reads the front's certificate
