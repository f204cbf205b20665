"""HTTPS from an ACME server (`tls.acme`, issue 17 part 4): the setting and the ENV.conf lines
both sides read, the files the server writes before and after its first certificate, certbot's
command lines, the challenge self-check against a real HTTP server, the renewal timer and what
check says. certbot and pebble themselves run in tests/e2e/test_acme.py."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pushdeploy import plan
from pushdeploy.settings import ConfigError, from_config

from pdserver import acme, install
from pdserver import env as envs
from pdserver import tls as server_tls

ACME = {"domains": ["pixel.example.com", "www.pixel.example.com"], "email": "ops@example.com"}


def settings(tls_setting, **more):
    env = {"hosts": ["h.example"], "tls": tls_setting, **more}
    return from_config({"environments": {"production": env}}, {})


def test_acme_becomes_the_environments_settings_and_lines_of_its_server_conf():
    raw = {"acme": {**ACME, "directory": "https://acme.example.com/directory", "ca_bundle": "/etc/ssl/acme.pem"}}
    env = settings({**raw, "hsts": 600}).environment("production")
    assert env.tls.mode == "acme" and env.tls.domains == ("pixel.example.com", "www.pixel.example.com")
    conf = plan.server_conf(env, {})
    assert (
        "TLS=acme\nTLS_CERTIFICATE=\nTLS_KEY=\nTLS_ACME_DOMAINS=pixel.example.com www.pixel.example.com\n"
        "TLS_ACME_EMAIL=ops@example.com\nTLS_ACME_DIRECTORY=https://acme.example.com/directory\n"
        "TLS_ACME_CA=/etc/ssl/acme.pem\nTLS_PUBLISH=443\nTLS_HSTS=600\n"
    ) in conf
    files = settings({"certificate": "/a.pem", "key": "/b.pem"}).environment("production")
    assert "TLS_ACME" not in plan.server_conf(files, {})
    one = settings({"acme": {"domains": "pixel.example.com", "email": "a@example.com"}}).environment("production")
    assert one.tls.domains == ("pixel.example.com",) and one.tls.directory == ""


@pytest.mark.parametrize(
    ("acme_setting", "key", "says"),
    [
        ("yes", "tls.acme", "expected {domains:"),
        ({"email": "a@example.com"}, "tls.acme.domains", "a list of 1 to 20 host names"),
        ({**ACME, "domains": []}, "tls.acme.domains", "a list of 1 to 20 host names"),
        ({**ACME, "domains": ["*.example.com"]}, "tls.acme.domains", "no wildcard"),
        ({**ACME, "domains": ["10.0.0.1"]}, "tls.acme.domains", "no IP address"),
        ({**ACME, "domains": ["localhost"]}, "tls.acme.domains", "with a dot"),
        ({**ACME, "domains": ["Pixel.Example.com"]}, "tls.acme.domains", "lower case"),
        ({**ACME, "domains": ["a.example.com", "a.example.com"]}, "tls.acme.domains", "listed twice"),
        ({**ACME, "email": "ops"}, "tls.acme.email", "e-mail address"),
        ({**ACME, "email": "ops@example.com -d evil.com"}, "tls.acme.email", "e-mail address"),
        ({**ACME, "directory": "http://acme.example.com/dir"}, "tls.acme.directory", "https:// URL"),
        ({**ACME, "directory": "https://a.example.com/$(id)"}, "tls.acme.directory", "https:// URL"),
        ({**ACME, "ca_bundle": "ca.pem"}, "tls.acme.ca_bundle", "absolute path"),
        ({**ACME, "staging": True}, "tls.acme.staging", "unknown setting"),
    ],
)
def test_bad_acme_settings_name_the_key(acme_setting, key, says):
    with pytest.raises(ConfigError) as error:
        settings({"acme": acme_setting})
    assert error.value.key == f"deploy.environments.production.{key}"
    assert says in str(error.value)


def test_the_acme_webroot_of_the_app_dir_is_pushdeploys():
    with pytest.raises(ConfigError, match="acme/ in app_dir is pushdeploy's"):
        settings({"acme": ACME}, files={"acme/x.txt": "x.txt"})


# ------------------------------------------------------------------ the server


def server_env(tmp_path, **values) -> envs.Env:
    lines = {
        "APP_DIR": str(tmp_path / "app"),
        "PROJECT": "pixel",
        "PROXY_SERVICE": "proxy",
        "TLS": "acme",
        "TLS_ACME_DOMAINS": "pixel.example.com www.pixel.example.com",
        "TLS_ACME_EMAIL": "ops@example.com",
        **values,
    }
    text = "".join(f"{key}={value}\n" for key, value in lines.items())
    return envs.Env("production", "/etc/pushdeploy/production.conf", envs.parse(text, "x.conf", "production"))


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setattr(envs.Env, "state_dir", property(lambda self: str(tmp_path / "state")))
    os.makedirs(tmp_path / "state", mode=0o700)
    os.makedirs(tmp_path / "app")
    return server_env(tmp_path)


def lineage(env, *names: str, days: int = 90) -> None:
    """A certificate for NAMES where certbot keeps ENV's (self-signed, made by openssl)."""
    cert, key = server_tls.source(env)
    os.makedirs(os.path.dirname(cert), exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        + ["-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN={names[0]}"]
        + ["-addext", "subjectAltName=" + ",".join(f"DNS:{name}" for name in names)],
        check=True,
        capture_output=True,
    )
    os.chmod(key, 0o600)


def test_the_certificate_is_certbots_lineage_and_is_needed_until_it_names_every_domain(env):
    cert, key = server_tls.source(env)
    assert cert == os.path.join(env.state_dir, "acme/config/live/pushdeploy-production/fullchain.pem")
    assert key.endswith("/live/pushdeploy-production/privkey.pem")
    assert server_tls.needs_certificate(env)
    lineage(env, "pixel.example.com")
    assert server_tls.needs_certificate(env)  # www is missing
    lineage(env, "www.pixel.example.com", "pixel.example.com")
    assert not server_tls.needs_certificate(env)


def test_before_its_certificate_the_proxy_serves_plain_http_and_the_challenges(env):
    assert server_tls.install(env) is True
    folder = os.path.join(env.app_dir, "tls")
    assert sorted(os.listdir(folder)) == ["compose.yml", "tls.conf"]
    conf = open(os.path.join(folder, "tls.conf")).read()
    assert "location ^~ /.well-known/acme-challenge/ { root /var/www/pushdeploy-acme;" in conf
    assert "listen 443" not in conf and "return 308" not in conf and "Strict-Transport-Security" not in conf
    assert "      - ./acme:/var/www/pushdeploy-acme:ro\n" in open(os.path.join(folder, "compose.yml")).read()
    assert oct(os.stat(os.path.join(env.app_dir, "acme")).st_mode & 0o777) == "0o755"
    lineage(env, "pixel.example.com", "www.pixel.example.com")
    assert server_tls.install(env) is True
    assert sorted(os.listdir(folder)) == ["cert.pem", "compose.yml", "key.pem", "tls.conf"]
    conf = open(os.path.join(folder, "tls.conf")).read()
    assert "listen 443 ssl;" in conf and "return 308" in conf and "acme-challenge/ { root" in conf
    assert server_tls.install(env) is False
    off = server_env(Path(env.app_dir).parent, TLS="off")
    assert server_tls.install(off) is True and not os.path.exists(os.path.join(env.app_dir, "acme"))


def test_certbots_command_lines(env, tmp_path):
    argv, environ = acme.certbot(env, acme.obtain_words(env))
    base = os.path.join(env.state_dir, "acme")
    assert argv[:2] == ["certbot", "certonly"] and "--non-interactive" in argv
    assert argv[argv.index("--cert-name") + 1] == "pushdeploy-production"
    assert [argv[argv.index(f"--{kind}-dir") + 1] for kind in ("config", "work", "logs")] == [
        f"{base}/config",
        f"{base}/work",
        f"{base}/logs",
    ]
    assert argv[argv.index("-w") + 1] == os.path.join(env.app_dir, "acme")
    assert [argv[i + 1] for i, word in enumerate(argv) if word == "-d"] == [
        "pixel.example.com",
        "www.pixel.example.com",
    ]
    assert "--server" not in argv and "REQUESTS_CA_BUNDLE" not in environ or os.environ.get("REQUESTS_CA_BUNDLE")
    private = server_env(tmp_path, TLS_ACME_DIRECTORY="https://127.0.0.1:14000/dir", TLS_ACME_CA="/etc/acme-ca.pem")
    argv, environ = acme.certbot(private, acme.obtain_words(private))
    assert argv[argv.index("--server") + 1] == "https://127.0.0.1:14000/dir"
    assert environ["REQUESTS_CA_BUNDLE"] == "/etc/acme-ca.pem"
    assert acme.renew_words(False) == ["renew", "--no-random-sleep-on-renew"]
    assert acme.renew_words(True)[-1] == "--force-renewal"


class _Webroot(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(directory: str):
    handler = functools.partial(_Webroot, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_challenge_self_check_asks_the_proxy_as_an_acme_server_would(env, tmp_path):
    server_tls.install(env)
    proxy = serve(os.path.join(env.app_dir, "acme"))  # a proxy that serves the webroot at its root
    elsewhere = serve(str(tmp_path))  # one that does not
    try:
        assert acme.answers_challenge(env, f"127.0.0.1:{proxy.server_port}") == ""
        assert acme.answers_challenge(env, f"0.0.0.0:{proxy.server_port}") == ""
        said = acme.answers_challenge(env, f"127.0.0.1:{elsewhere.server_port}")
        assert "answered 404 for a challenge file" in said and "include /etc/nginx/pushdeploy/*.conf;" in said
    finally:
        for server in (proxy, elsewhere):
            server.shutdown()
            server.server_close()
    assert "does not answer" in acme.answers_challenge(env, f"127.0.0.1:{elsewhere.server_port}")
    assert os.listdir(os.path.join(env.app_dir, "acme/.well-known/acme-challenge")) == []  # its file is gone


def test_certify_waits_for_the_proxy_and_says_why_it_cannot_obtain(env, capsys, monkeypatch):
    server_tls.install(env)
    assert acme.certify(env, lambda e: True, lambda: "") == 0
    assert "obtained once the proxy serves ACME's challenges" in capsys.readouterr().out
    monkeypatch.setattr(shutil, "which", lambda name: None)
    proxy = serve(os.path.join(env.app_dir, "acme"))
    try:
        assert acme.certify(env, lambda e: True, lambda: f"127.0.0.1:{proxy.server_port}") == 1
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert "certbot is not installed on this host: apt-get install certbot" in capsys.readouterr().out
    lineage(env, "pixel.example.com", "www.pixel.example.com")
    assert acme.certify(env, lambda e: True, lambda: "127.0.0.1:9") == 0  # it has one: nothing asked


def test_check_says_how_the_certificate_came_and_how_its_renewal_went(env):
    server_tls.install(env)
    assert "no certificate obtained yet (ACME for pixel.example.com" in server_tls.expiry(env)["tls"]
    lineage(env, "pixel.example.com", "www.pixel.example.com", days=10)
    server_tls.install(env)
    found = server_tls.expiry(env)
    assert found["tls"].startswith("certificate from ACME for pixel.example.com, www.pixel.example.com, ends ")
    assert "renewed by its timer (not run yet)" in found["tls"]
    assert "renewal failed or did not run" in found["tls_warning"] and "tls-renew production" in found["tls_warning"]
    envs.write_text(os.path.join(env.state_dir, "tls-renewal"), f"{int(time.time())} failed (exit 1)\n")
    assert ": failed (exit 1)" in server_tls.expiry(env)["tls"]
    assert server_tls.plan_line(env).startswith("ACME certificate for pixel.example.com, www.pixel.example.com, ends ")


def test_the_renewal_timer_is_a_cron_entry_without_systemd_and_goes_with_acme(root, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    conf = "APP_DIR=/x\nPROJECT=p\nTLS=acme\nTLS_ACME_DOMAINS=a.example.com\nTLS_ACME_EMAIL=a@example.com\n"
    (root / "bundle/env.conf").write_text(conf)
    install.Installer(str(root / "bundle"), "production", "root", str(root / "srv/app")).install_tls_renewal()
    entry = root / "cron.d/pushdeploy-tls-production"
    assert f"17 4,16 * * * root {root}/prefix/bin/deploy tls-renew production >>" in entry.read_text()
    assert "certificate renewal of production: cron" in capsys.readouterr().out
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(install.Failed, match="apt-get install certbot"):
        install.Installer(str(root / "bundle"), "production", "root", str(root / "srv/app")).install_tls_renewal()
    (root / "bundle/env.conf").write_text("APP_DIR=/x\nPROJECT=p\n")
    gone = install.Installer(str(root / "bundle"), "production", "root", str(root / "srv/app"))
    gone.install_tls_renewal()
    assert not entry.exists()
    assert "OnCalendar=*-*-* 4,16:17:00" in acme.timer_text("production")
    assert f"ExecStart={root}/prefix/bin/deploy tls-renew production" in acme.service_text("production")


def test_tls_renew_is_roots_alone_and_takes_only_force(monkeypatch, capsys):
    from pdserver import facts, main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main.main(["tls-renew", "production"]) == facts.EXIT_USAGE
    assert "tls-renew is root's" in capsys.readouterr().err
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert main.main(["tls-renew", "production", "--now"]) == facts.EXIT_USAGE
