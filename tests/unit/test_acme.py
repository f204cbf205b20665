"""HTTPS from an ACME server (`tls.acme`, issue 17 part 4): the setting and the ENV.conf lines
both sides read, the files the server writes before and after its first certificate, certbot's
command lines, the challenge self-check against a real HTTP server, the renewal timer and what
check says. certbot and pebble themselves run in tests/e2e/test_acme.py."""

from __future__ import annotations

import functools
import hashlib
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
from pdserver.request import Refused

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
        "TLS_ACME_CA=/etc/ssl/acme.pem\nTLS_ACME_FIRST=\nTLS_PUBLISH=443\nTLS_HSTS=600\n"
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
        ({**ACME, "first": "10.0.0.1"}, "tls.acme.first", "ADDRESS:PORT"),
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
    assert f"--webroot-path={os.path.join(env.app_dir, 'acme')}" in argv
    assert "--domains=pixel.example.com,www.pixel.example.com" in argv and "--email=ops@example.com" in argv
    assert "--keep-until-expiring" in argv and not any(word.startswith("--server") for word in argv)
    private = server_env(tmp_path, TLS_ACME_DIRECTORY="https://127.0.0.1:14000/dir", TLS_ACME_CA="/etc/acme-ca.pem")
    argv, environ = acme.certbot(private, acme.obtain_words(private))
    assert "--server=https://127.0.0.1:14000/dir" in argv
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
    assert acme.certify(env, lambda e: True, lambda: ("", "the proxy does not run")) == 0
    assert "cannot be obtained yet: the proxy does not run" in capsys.readouterr().out
    monkeypatch.setattr(shutil, "which", lambda name: None)
    proxy = serve(os.path.join(env.app_dir, "acme"))
    try:
        assert acme.certify(env, lambda e: True, lambda: (f"127.0.0.1:{proxy.server_port}", "")) == 1
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert "certbot is not installed on this host: apt-get install certbot" in capsys.readouterr().out
    lineage(env, "pixel.example.com", "www.pixel.example.com")
    assert acme.certify(env, lambda e: True, lambda: ("127.0.0.1:9", "")) == 0  # it has one: nothing asked


def test_a_lineage_from_another_directory_is_obtained_again_at_once(env, tmp_path):
    lineage(env, "pixel.example.com", "www.pixel.example.com")
    assert not server_tls.needs_certificate(env)  # obtained before the directory was noted: kept
    envs.write_text(server_tls.directory_file(env), "https://acme-staging.example.com/directory\n")
    assert server_tls.needs_certificate(env)
    assert "--force-renewal" in acme.obtain_words(env) and "--keep-until-expiring" not in acme.obtain_words(env)
    envs.write_text(server_tls.directory_file(env), "\n")
    assert not server_tls.needs_certificate(env)


def test_an_app_location_for_the_challenges_is_refused_with_acme(env):
    from pushdeploy import tls

    acme_tls = settings({"acme": ACME}).environment("production").tls
    own = {"pixel.conf": b"server { location /.well-known/acme-challenge/ { root /srv/acme; } }"}
    assert "pixel.conf has an acme-challenge location of its own" in tls.include_problem(acme_tls, own)
    webroot = os.path.join(env.app_dir, "acme")
    os.makedirs(webroot)  # the app's own folder of that name, not pushdeploy's: kept without tls.acme
    server_tls.install(server_env(Path(env.app_dir).parent, TLS="off"))
    assert os.path.isdir(webroot)


def test_many_names_are_taken_by_both_sides():
    names = [f"name{i:02d}-{'x' * 25}.pixel.example.com" for i in range(9)]
    env = settings({"acme": {**ACME, "domains": names}}).environment("production")
    conf = plan.server_conf(env, {})
    assert envs.parse(conf.replace("TLS_PUBLISH", "PROXY_SERVICE=proxy\nTLS_PUBLISH"), "x.conf", "production")


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
    assert (
        f"{acme.minute('production')} 4,16 * * * root {root}/prefix/bin/deploy tls-renew production >"
        in entry.read_text()
    )
    assert "certificate renewal of production: cron" in capsys.readouterr().out
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(install.Failed, match="apt-get install certbot"):
        install.Installer(str(root / "bundle"), "production", "root", str(root / "srv/app")).install_tls_renewal()
    (root / "bundle/env.conf").write_text("APP_DIR=/x\nPROJECT=p\n")
    gone = install.Installer(str(root / "bundle"), "production", "root", str(root / "srv/app"))
    gone.install_tls_renewal()
    assert not entry.exists()
    assert f"OnCalendar=*-*-* 4,16:{acme.minute('production'):02d}:00" in acme.timer_text("production")
    assert acme.minute("production") != acme.minute("staging")
    assert f"ExecStart={root}/prefix/bin/deploy tls-renew production" in acme.service_text("production")


def test_tls_renew_is_roots_alone_and_takes_only_force(monkeypatch, capsys):
    from pdserver import facts, main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main.main(["tls-renew", "production"]) == facts.EXIT_USAGE
    assert "tls-renew is root's" in capsys.readouterr().err
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert main.main(["tls-renew", "production", "--now"]) == facts.EXIT_USAGE


# ------------------------------------------------------------------ a fleet: the first host obtains, the others copy


def test_on_several_hosts_the_others_reach_the_first_on_port_80_unless_told():
    fleet = settings({"acme": ACME}, hosts=["pd@10.0.0.11", "pd@10.0.0.12:2222"]).environment("production")
    assert fleet.tls.first == "10.0.0.11:80" and "TLS_ACME_FIRST=10.0.0.11:80\n" in plan.server_conf(fleet, {})
    told = settings({"acme": {**ACME, "first": "192.168.1.5:8080"}}, hosts=["a.example", "b.example"])
    assert told.environment("production").tls.first == "192.168.1.5:8080"
    one = settings({"acme": {**ACME, "first": "192.168.1.5:8080"}}).environment("production")
    assert one.tls.first == ""
    with pytest.raises(ConfigError, match="set tls.acme.first to ADDRESS:PORT"):
        settings({"acme": ACME}, hosts=["pd@[fd00::1]", "pd@[fd00::2]"])
    with pytest.raises(ConfigError, match="each host's own loopback"):
        settings({"acme": ACME}, hosts=["pd@127.0.0.1:2201", "pd@127.0.0.1:2202"])


@pytest.fixture
def follower(tmp_path, monkeypatch):
    from pdserver import facts

    monkeypatch.setattr(envs.Env, "state_dir", property(lambda self: str(tmp_path / "state")))
    monkeypatch.setattr(facts, "STATE", str(tmp_path / "state-root"))
    os.makedirs(tmp_path / "state", mode=0o700)
    os.makedirs(tmp_path / "state-root/production")
    (tmp_path / "state-root/production/host").write_text("2\n")
    os.makedirs(tmp_path / "app")
    return server_env(tmp_path, TLS_ACME_FIRST="10.0.0.11:80")


def test_the_other_hosts_forward_challenges_they_do_not_hold_and_serve_a_copy(follower, capsys):
    assert server_tls.follower(follower) and not server_tls.needs_certificate(follower)
    assert server_tls.source(follower)[0].endswith("/acme/copy/fullchain.pem")
    server_tls.install(follower)
    conf = open(os.path.join(follower.app_dir, "tls/tls.conf")).read()
    assert "try_files $uri @pushdeploy_acme_first;" in conf
    assert "location @pushdeploy_acme_first { if ($http_x_pushdeploy_acme) { return 404; } " in conf
    assert "proxy_pass http://10.0.0.11:80; proxy_set_header Host $host; proxy_set_header X-Pushdeploy-Acme 1;" in conf
    assert (
        "no certificate yet" in server_tls.expiry(follower)["tls"]
        and "copies it to every host" in server_tls.expiry(follower)["tls"]
    )
    assert "none yet; `inv server.setup` obtains it on the first host" in server_tls.plan_line(follower)
    assert acme.certify(follower, lambda e: True, lambda: ("127.0.0.1:9", "")) == 0  # never asks an ACME server
    first = server_env(Path(follower.app_dir).parent, TLS_ACME_FIRST="10.0.0.11:80")
    (Path(follower.app_dir).parent / "state-root/production/host").write_text("1\n")
    assert server_tls.fleet(first) and not server_tls.follower(first)
    assert "on a fleet" not in capsys.readouterr().out
    assert acme.certify(first, lambda e: True, lambda: ("127.0.0.1:9", "")) == 0  # a deploy's: only tls-export obtains
    assert "across the fleet, `inv server.setup --env production` obtains" in capsys.readouterr().out


def exported(tmp_path, names=("pixel.example.com", "www.pixel.example.com")) -> bytes:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", f"/CN={names[0]}"]
        + ["-addext", "subjectAltName=" + ",".join(f"DNS:{name}" for name in names)],
        check=True,
        capture_output=True,
    )
    body = cert.read_bytes() + key.read_bytes()
    return body + f"{acme.TRAILER}{hashlib.sha256(body).hexdigest()}\n".encode()


def test_a_copy_is_taken_only_whole_and_as_a_pair(tmp_path):
    data = exported(tmp_path)
    cert, key = acme.received_pair(data)
    assert cert.startswith(b"-----BEGIN CERTIFICATE-----") and b"PRIVATE KEY-----" in key
    for bad, says in (
        (data[:-10] + b"0" * 9 + b"\n", "incomplete or altered"),
        (data[: len(data) // 2], "incomplete or altered"),
        (b"", "incomplete or altered"),
    ):
        with pytest.raises(Refused, match=says):
            acme.received_pair(bad)
    mixed_body = cert + exported_key(tmp_path)
    mixed = mixed_body + f"{acme.TRAILER}{hashlib.sha256(mixed_body).hexdigest()}\n".encode()
    with pytest.raises(Refused, match="not a pair nginx can serve"):
        acme.received_pair(mixed)
    with pytest.MonkeyPatch.context() as patch:  # openssl 3.0 cannot make one that has ended: it ended
        patch.setattr(server_tls, "days_left", lambda ends, now=None: -1)
        with pytest.raises(Refused, match="the certificate has ended"):
            acme.received_pair(data)
    only_cert = cert + f"{acme.TRAILER}{hashlib.sha256(cert).hexdigest()}\n".encode()
    with pytest.raises(Refused, match="not a certificate chain followed by its key"):
        acme.received_pair(only_cert)


def exported_key(tmp_path) -> bytes:
    key = tmp_path / "other.key"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key)],
        check=True,
        capture_output=True,
    )
    return key.read_bytes()


def test_only_the_first_host_of_a_fleet_renews(root, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    conf = "APP_DIR=/x\nPROJECT=p\nTLS=acme\nTLS_ACME_DOMAINS=a.example.com\nTLS_ACME_EMAIL=a@example.com\n"
    (root / "bundle/env.conf").write_text(conf + "TLS_ACME_FIRST=10.0.0.11:80\n")
    entry = root / "cron.d/pushdeploy-tls-production"
    for position, installed in ((1, True), (2, False)):
        install.Installer(
            str(root / "bundle"), "production", "root", str(root / "srv/app"), position=position
        ).install_tls_renewal()
        assert entry.exists() is installed


def test_the_copy_verbs_are_refused_to_a_deploy_account_even_through_sudo(monkeypatch, tmp_path):
    from pdserver import guard
    from pdserver.request import Request

    monkeypatch.setenv("SUDO_USER", "deploy")
    real = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda path: path == "/etc/sudoers.d/pushdeploy-deploy" or real(path))
    for verb in ("tls-export", "tls-import"):
        assert "hands over a private key" in guard.admin_only(Request(verb, "production"))
