"""HTTPS at the proxy (issue 17, part 4), certificates from files on the server: an environment
of its own on the sandbox server with `tls:`, a certificate of a test CA for 127.0.0.1.

Plain HTTP redirects (but ACME's challenge path), HTTPS answers with HSTS; a deploy under
open-loop load over HTTPS (each request a full, verified handshake) loses nothing; a renewed
certificate is served after server.setup through a graceful reload, again under load, and
server.check warns before it ends; a key others can read is refused and changes nothing; and
without tls: the proxy serves plain HTTP again."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, SANDBOX, STAGING_A, STAGING_B, inv, remove_project, staging_like_server_env
from tests.openload import OpenLoad

pytestmark = pytest.mark.e2e

ENV, PROJECT = "tls", "pixel-tls"
APP_DIR, STATE_DIR = Path(f"/srv/pushdeploy/{PROJECT}"), Path(f"/var/lib/pushdeploy/{ENV}")
HTTP_PORT, HTTPS_PORT, OTHER_PORT = 8096, 8097, 8098  # this environment's proxy on loopback (no other test uses them)
CERTS = Path("/etc/pushdeploy-e2e-tls")  # "on the server": the sandbox server is this machine
CERT, KEY = CERTS / "fullchain.pem", CERTS / "privkey.pem"
HSTS = 600
RATE, BUDGET = 20, 1.0


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(folder: Path) -> None:
    openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"),
        *("-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"), "-subj", "/CN=pushdeploy e2e CA"),
    )


def issue(folder: Path, days: int) -> None:
    """A certificate for 127.0.0.1 and localhost from the test CA at CERT and KEY (key 0600)."""
    csr, extensions = folder / "site.csr", folder / "site.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
        *("-keyout", str(folder / "new.key"), "-out", str(csr), "-subj", "/CN=localhost"),
    )
    openssl(
        *("x509", "-req", "-in", str(csr), "-CA", str(folder / "ca.crt"), "-CAkey", str(folder / "ca.key")),
        *("-CAcreateserial", "-days", str(days), "-extfile", str(extensions), "-out", str(folder / "new.crt")),
    )
    (folder / "new.key").chmod(0o600)
    CERT.write_bytes((folder / "new.crt").read_bytes() + (folder / "ca.crt").read_bytes())
    os.replace(folder / "new.key", KEY)


def context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(CERTS / "ca.crt"))


def served_serial(port: int = HTTPS_PORT) -> str:
    """The serial number of the certificate PORT serves (checked against the test CA)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert()["serialNumber"]


def ask(scheme: str, path: str = "/") -> http.client.HTTPResponse:
    if scheme == "https":
        connection = http.client.HTTPSConnection("127.0.0.1", HTTPS_PORT, timeout=10, context=context())
    else:
        connection = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    response.body = response.read().decode(errors="replace")
    connection.close()
    return response


def settings(path: Path, server_env: Path, tls: bool = True, port: int = HTTPS_PORT) -> str:
    path.write_text(
        "deploy:\n"
        "  environments:\n"
        f"    {ENV}:\n"
        "      hosts: [127.0.0.1:2222]\n"
        f"      project: {PROJECT}\n"
        f"      app_dir: {APP_DIR}\n"
        "      version_pattern: '^[0-9a-z][0-9a-z.-]*$'\n"
        "      health_timeout: 30\n"
        + (
            f"      tls: {{certificate: {CERT}, key: {KEY}, publish: '127.0.0.1:{port}', hsts: {HSTS}}}\n"
            if tls
            else ""
        )
        + "      files:\n"
        f"        docker-compose.yml: {ROOT}/example/docker-compose.staging.yml\n"
        f"        docker/etc/nginx/conf.d/pixel.conf: {ROOT}/example/docker/etc/nginx/conf.d/pixel.conf\n"
        f"      server_env: {server_env}\n"
    )
    return str(path)


@pytest.fixture(scope="module")
def environment(server, images, tmp_path_factory):
    """A fresh `tls` environment at STAGING_A, serving HTTPS with a certificate of the test CA."""
    remove_project(PROJECT)
    subprocess.run(["rm", "-rf", str(APP_DIR), str(STATE_DIR), str(CERTS)], check=True)
    CERTS.mkdir(mode=0o700)
    make_ca(CERTS)
    issue(CERTS, days=30)
    server_env = staging_like_server_env(SANDBOX / f"server-env/{ENV}.env", HTTP_PORT)
    config = settings(tmp_path_factory.mktemp(ENV) / f"{ENV}.yaml", server_env)
    setup = inv("-f", config, "server.setup", "--env", ENV)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    first = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_A)
    assert first.returncode == 0, first.stdout + first.stderr
    yield config
    remove_project(PROJECT)
    server_env.unlink(missing_ok=True)
    shutil.rmtree(CERTS, ignore_errors=True)


def test_https_answers_plain_http_redirects_and_a_deploy_loses_no_request(environment):
    config = environment
    moved = ask("http", "/about/?x=1")
    assert moved.status == 308 and moved.getheader("Location") == "https://127.0.0.1/about/?x=1"
    assert ask("http", "/.well-known/acme-challenge/token").status == 404  # passed to the app, not redirected
    page = ask("https")
    assert page.status == 200 and f"Pixel version {STAGING_A}" in page.body
    assert page.getheader("Strict-Transport-Security") == f"max-age={HSTS}"
    assert (APP_DIR / "tls/key.pem").stat().st_mode & 0o777 == 0o600

    with OpenLoad(f"https://127.0.0.1:{HTTPS_PORT}/", rate=RATE, seconds=300, context=context()) as load:
        time.sleep(2)
        deployed = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_B)
        time.sleep(3)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    summary = load.summary(budget=BUDGET)
    print(summary.line())
    assert summary.failed == 0 and summary.slow == 0, summary.failures
    assert {STAGING_A, STAGING_B} <= set(summary.versions)


def test_a_renewed_certificate_is_served_after_setup_and_check_warns_before_it_ends(environment):
    config = environment
    before = served_serial()
    issue(CERTS, days=10)  # renewed (by whatever renews it), and ending soon
    with OpenLoad(f"https://127.0.0.1:{HTTPS_PORT}/", rate=RATE, seconds=300, context=context()) as load:
        time.sleep(2)
        setup = inv("-f", config, "server.setup", "--env", ENV)
        time.sleep(3)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "tls: the proxy reloaded" in setup.stdout
    summary = load.summary(budget=BUDGET)
    print(summary.line())
    assert summary.failed == 0 and summary.slow == 0, summary.failures
    assert served_serial() != before
    check = inv("-f", config, "server.check", "--env", ENV)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"https: certificate from {CERT}, ends " in check.stdout
    assert "WARNING: the certificate ends in 9 days" in check.stdout or "ends in 10 days" in check.stdout
    plan = inv("-f", config, "deploy.plan", "--env", ENV, "--tag", STAGING_A, "--force")
    assert f"https:       certificate {CERT}, ends " in plan.stdout and "fewer than 14 days left" in plan.stdout


def test_a_key_others_can_read_is_refused_and_changes_nothing(environment):
    config = environment
    served = served_serial()
    KEY.chmod(0o644)
    try:
        plan = inv("-f", config, "deploy.plan", "--env", ENV, "--tag", STAGING_A, "--force")
        setup = inv("-f", config, "server.setup", "--env", ENV)
        deployed = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_A, "--force")
    finally:
        KEY.chmod(0o600)
    assert plan.returncode == 1 and f"https:       WOULD FAIL: the key {KEY} must be root's" in plan.stdout, plan.stdout
    assert setup.returncode != 0 and f"chmod 600 {KEY}" in setup.stdout + setup.stderr
    assert deployed.returncode != 0 and "FAILED at preflight" in deployed.stdout, deployed.stdout
    assert f"chmod 600 {KEY}" in deployed.stdout
    assert served_serial() == served and f"Pixel version {STAGING_B}" in ask("https").body


def test_without_tls_the_proxy_serves_plain_http_again(environment, tmp_path):
    config = settings(tmp_path / "plain.yaml", SANDBOX / f"server-env/{ENV}.env", tls=False)
    assert inv("-f", config, "server.setup", "--env", ENV).returncode == 0
    deployed = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_A, "--force")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    plain = ask("http")
    assert plain.status == 200 and f"Pixel version {STAGING_A}" in plain.body
    assert plain.getheader("Strict-Transport-Security") is None
    with pytest.raises(OSError):
        served_serial()
    assert not (APP_DIR / "tls/key.pem").exists()


def test_tls_turned_on_again_elsewhere_is_served_from_the_next_deploy_and_renewed_by_tls_reload(environment, tmp_path):
    """On again, published on another port, with the proxy running plain: setup installs and
    says HTTPS comes with the next deploy (the proxy must be recreated with port 443); that
    deploy checks nginx's configuration first, then serves it; a renewal picked up by
    `bin/deploy tls-reload` (root, as a renewal's hook) is served at once."""
    config = settings(tmp_path / "again.yaml", SANDBOX / f"server-env/{ENV}.env", port=OTHER_PORT)
    setup = inv("-f", config, "server.setup", "--env", ENV)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "the proxy serves it from the next deploy" in setup.stdout
    with pytest.raises(OSError):
        served_serial(OTHER_PORT)
    deployed = inv("-f", config, "deploy.to", "--env", ENV, "--tag", STAGING_B)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "tls: proxy accepts its configuration with HTTPS (nginx -t)" in deployed.stdout
    before = served_serial(OTHER_PORT)
    assert ask("http").status == 308
    issue(CERTS, days=30)
    reloaded = subprocess.run(
        ["/opt/pushdeploy/bin/deploy", "tls-reload", ENV], capture_output=True, text=True, timeout=120
    )
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    assert "tls: the proxy reloaded" in reloaded.stdout
    deadline = time.monotonic() + 10  # nginx -s reload returns before its new workers take connections
    while served_serial(OTHER_PORT) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served_serial(OTHER_PORT) != before
