"""HTTPS from an ACME server (issue 17, part 4), end to end: pebble, Debian's ACME test server,
on loopback, validates over HTTP-01 through the environment's real proxy; certbot, run by
bin/deploy on the sandbox server, obtains and renews.

The first setup cannot obtain (no proxy runs yet) and says when it will; the first deploy
obtains the certificate after its switch and serves it, with plain HTTP redirected but for
ACME's challenges; the renewal timer is a cron entry, and its command, forced, renews under
open-loop HTTPS load with no failed or slow request; an ACME server that cannot be reached
fails the setup and changes nothing served; new names are obtained by the next setup."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e import acmeserver
from tests.e2e.conftest import ROOT, SANDBOX, STAGING_A, STAGING_B, inv, remove_project, staging_like_server_env
from tests.openload import NamedHTTPSConnection, OpenLoad

pytestmark = pytest.mark.e2e

ENV, PROJECT = "acme", "pixel-acme"
APP_DIR, STATE_DIR = Path(f"/srv/pushdeploy/{PROJECT}"), Path(f"/var/lib/pushdeploy/{ENV}")
HTTP_PORT, HTTPS_PORT = 8099, 8100  # this environment's proxy on loopback (no other test uses them)
DIRECTORY = acmeserver.DIRECTORY
WORK = Path("/etc/pushdeploy-e2e-acme")  # "on the server" (the sandbox server is this machine): pebble's files
CRON_ENTRY = Path(f"/etc/cron.d/pushdeploy-tls-{ENV}")
DOMAIN, OTHER = "pixel.test", "www.pixel.test"  # pebble's DNS (challtestsrv) answers 127.0.0.1 for every name
RATE, BUDGET = 20, 1.0


@pytest.fixture(scope="module")
def pebble():
    """pebble on loopback, validating on this environment's proxy port; its root (a file)."""
    with acmeserver.pebble(WORK, HTTP_PORT) as root:
        yield root


def context(root: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root))


def served(root: Path, name: str = DOMAIN) -> dict:
    """The certificate the proxy serves for NAME, verified against pebble's root."""
    return acmeserver.served("127.0.0.1", HTTPS_PORT, root, name)


def ask_https(root: Path, path: str = "/") -> http.client.HTTPResponse:
    connection = NamedHTTPSConnection("127.0.0.1", HTTPS_PORT, DOMAIN, timeout=10, context=context(root))
    connection.request("GET", path, headers={"Host": DOMAIN})
    response = connection.getresponse()
    response.body = response.read().decode(errors="replace")
    connection.close()
    return response


def ask_http(path: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=10)
    connection.request("GET", path, headers={"Host": DOMAIN})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def settings(path: Path, server_env: Path, domains=(DOMAIN,), directory: str = DIRECTORY) -> str:
    acme = {
        "domains": list(domains),
        "email": "ops@pixel.test",
        "directory": directory,
        "ca_bundle": str(WORK / "ca.crt"),
    }
    path.write_text(
        "deploy:\n"
        "  environments:\n"
        f"    {ENV}:\n"
        "      hosts: [127.0.0.1:2222]\n"
        f"      project: {PROJECT}\n"
        f"      app_dir: {APP_DIR}\n"
        "      version_pattern: '^[0-9a-z][0-9a-z.-]*$'\n"
        "      health_timeout: 30\n"
        f"      tls: {{acme: {json.dumps(acme)}, publish: '127.0.0.1:{HTTPS_PORT}', hsts: 600}}\n"
        "      files:\n"
        f"        docker-compose.yml: {ROOT}/example/docker-compose.staging.yml\n"
        f"        docker/etc/nginx/conf.d/pixel.conf: {ROOT}/example/docker/etc/nginx/conf.d/pixel.conf\n"
        f"      server_env: {server_env}\n"
    )
    return str(path)


@pytest.fixture(scope="module")
def environment(server, images, pebble, tmp_path_factory):
    """A fresh `acme` environment, set up (no proxy runs yet: no certificate) and deployed once."""
    remove_project(PROJECT)
    subprocess.run(["rm", "-rf", str(APP_DIR), str(STATE_DIR)], check=True)
    server_env = staging_like_server_env(SANDBOX / f"server-env/{ENV}.env", HTTP_PORT)
    config = settings(tmp_path_factory.mktemp(ENV) / f"{ENV}.yaml", server_env)
    setup = inv("-f", config, "server.setup", "--env", ENV)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "cannot be obtained yet: the proxy does not run with ACME's webroot" in setup.stdout, setup.stdout
    first = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_A)
    assert first.returncode == 0, first.stdout + first.stderr
    yield config, first.stdout, pebble
    remove_project(PROJECT)
    server_env.unlink(missing_ok=True)
    CRON_ENTRY.unlink(missing_ok=True)


def test_the_first_deploy_obtains_the_certificate_and_serves_it(environment):
    config, deployed, root = environment
    assert "==> certificate" in deployed and f"tls: obtaining a certificate for {DOMAIN}" in deployed, deployed
    assert " ok certificate (" in deployed
    page = ask_https(root)
    assert page.status == 200 and f"Pixel version {STAGING_A}" in page.body
    assert page.getheader("Strict-Transport-Security") == "max-age=600"
    assert ("DNS", DOMAIN) in served(root)["subjectAltName"]
    moved = acmeserver.eventually(
        lambda: ask_http("/about/"), lambda response: response.status == 308
    )  # old workers drain
    assert moved.status == 308 and moved.getheader("Location") == f"https://{DOMAIN}/about/"
    key = STATE_DIR / f"acme/config/live/pushdeploy-{ENV}/privkey.pem"
    assert key.resolve().stat().st_mode & 0o077 == 0 and (APP_DIR / "tls/key.pem").stat().st_mode & 0o777 == 0o600
    assert f"/opt/pushdeploy/bin/deploy tls-renew {ENV}" in CRON_ENTRY.read_text()
    check = inv("-f", config, "server.check", "--env", ENV)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"https: certificate from ACME for {DOMAIN}, ends " in check.stdout, check.stdout
    again = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_B)
    assert again.returncode == 0 and "==> certificate" not in again.stdout, again.stdout


def test_the_timer_renews_under_load_and_nginx_serves_the_new_certificate(environment):
    config, _, root = environment
    before = served(root)["serialNumber"]
    line = next(line for line in CRON_ENTRY.read_text().splitlines() if "tls-renew" in line)
    command = line.split(" root ", 1)[1].split(">", 1)[0].split() + ["--force"]
    url = f"https://127.0.0.1:{HTTPS_PORT}/"
    with OpenLoad(url, rate=RATE, seconds=300, context=context(root), server_name=DOMAIN) as load:
        time.sleep(2)
        renewed = subprocess.run(command, capture_output=True, text=True, timeout=600)
        time.sleep(3)
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert "tls: the proxy reloaded" in renewed.stdout, renewed.stdout
    summary = load.summary(budget=BUDGET)
    print(summary.line())
    assert summary.failed == 0 and summary.slow == 0, summary.failures
    assert acmeserver.eventually(lambda: served(root)["serialNumber"], lambda serial: serial != before) != before
    check = inv("-f", config, "server.check", "--env", ENV)
    assert "last renewal " in check.stdout and ": ok" in check.stdout, check.stdout
    due = subprocess.run(command[:-1], capture_output=True, text=True, timeout=600)  # not due: nothing changes
    assert due.returncode == 0 and "tls: the proxy reloaded" not in due.stdout, due.stdout


def test_an_unreachable_acme_server_fails_the_setup_and_changes_nothing_served(environment, tmp_path):
    _, _, root = environment
    before = served(root)["serialNumber"]
    config = settings(
        tmp_path / "down.yaml", SANDBOX / f"server-env/{ENV}.env", (DOMAIN, OTHER), "https://127.0.0.1:14999/dir"
    )
    setup = inv("-f", config, "server.setup", "--env", ENV)
    assert setup.returncode != 0, setup.stdout + setup.stderr
    assert "tls: certbot failed" in setup.stdout and "the proxy serves what it served" in setup.stdout, setup.stdout
    assert served(root)["serialNumber"] == before and ask_https(root).status == 200


def test_new_names_are_obtained_by_the_next_setup(environment, tmp_path):
    _, _, root = environment
    config = settings(tmp_path / "names.yaml", SANDBOX / f"server-env/{ENV}.env", (DOMAIN, OTHER))
    setup = inv("-f", config, "server.setup", "--env", ENV)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert f"tls: obtaining a certificate for {DOMAIN}, {OTHER}" in setup.stdout, setup.stdout

    def names() -> tuple:
        try:
            return served(root, OTHER)["subjectAltName"]
        except ssl.SSLCertVerificationError:  # the old certificate, from nginx's old workers
            return ()

    assert ("DNS", OTHER) in acmeserver.eventually(names, lambda names: ("DNS", OTHER) in names)


def test_switch_recreate_obtains_at_its_finish_and_checks_each_new_version_over_https(environment, tmp_path):
    """`switch: recreate` on Pixel's own layout (example/seed/) with the one line tls: asks of its
    nginx file: the first deploy checks the new version through the proxy over plain HTTP (no
    certificate yet), obtains the certificate after its switch; the next checks it over HTTPS."""
    _, _, root = environment
    remove_project(PROJECT)
    subprocess.run(["rm", "-rf", str(APP_DIR), str(STATE_DIR)], check=True)
    seed = (ROOT / "example/seed/docker/etc/nginx/conf.d/pixel.conf").read_text()
    assert seed.count("listen 80 default_server;") == 1
    conf = tmp_path / "pixel.conf"
    conf.write_text(
        seed.replace(
            "listen 80 default_server;", "listen 80 default_server;\n    include /etc/nginx/pushdeploy/*.conf;"
        )
    )
    config = settings(tmp_path / "recreate.yaml", SANDBOX / f"server-env/{ENV}.env")
    text = Path(config).read_text()
    text = text.replace(f"{ROOT}/example/docker-compose.staging.yml", f"{ROOT}/example/seed/docker-compose.yml")
    text = text.replace(f"{ROOT}/example/docker/etc/nginx/conf.d/pixel.conf", str(conf))
    Path(config).write_text(
        text.replace("      health_timeout: 30\n", "      health_timeout: 30\n      switch: recreate\n")
    )
    setup = inv("-f", config, "server.setup", "--env", ENV)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    first = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_A)
    assert first.returncode == 0, first.stdout + first.stderr
    assert " ok certificate (" in first.stdout, first.stdout
    page = acmeserver.eventually(
        lambda: ask_https(root), lambda response: f"Pixel version {STAGING_A}" in response.body
    )
    assert page.status == 200 and f"Pixel version {STAGING_A}" in page.body
    second = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_B)
    assert second.returncode == 0 and "==> certificate" not in second.stdout, second.stdout + second.stderr
    page = ask_https(root)
    assert page.status == 200 and f"Pixel version {STAGING_B}" in page.body
