"""Review environments on the sandbox: review-N per pull request, side by side behind the
front proxy (Host header on 127.0.0.1:8088), each with its own database; review.down
leaves nothing; only names the template allows; the cap; a failed first up leaves nothing."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e import testca
from tests.e2e.conftest import ROOT, STAGING_A, STAGING_B, inv, served_version, ssh_raw, tool_env
from tests.openload import NamedHTTPSConnection

FRONT_PORT = 8088
DOMAIN = "review.localhost"
TEMPLATE_DIR = "/srv/pushdeploy/pixel-review"
PRS = (1, 2, 3)


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], env=tool_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def get(pr: int, path: str = "/", timeout: float = 5) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{FRONT_PORT}{path}", headers={"Host": f"pr-{pr}.{DOMAIN}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def served(pr: int, version: str, seconds: float = 20) -> str:
    deadline, body = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        try:
            status, body = get(pr)
            if status == 200 and f"Pixel version {version}" in body:
                return body
        except OSError:
            pass
        time.sleep(0.3)
    return body


def visits(pr: int) -> int:
    out = subprocess.run(
        [
            "docker",
            "compose",
            "-p",
            f"pixel-review-{pr}",
            "exec",
            "-T",
            "db",
            "psql",
            "-U",
            "pixel",
            "-d",
            "pixel",
            "-tAc",
            "SELECT count(*) FROM notes_visit",
        ],
        cwd=f"{TEMPLATE_DIR}-{pr}",
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def leftovers(pr: int) -> dict[str, object]:
    """Everything review-N could have left: an empty answer everywhere means it is gone."""
    label = f"label=com.docker.compose.project=pixel-review-{pr}"
    return {
        "containers": docker("ps", "-aq", "--filter", label).split(),
        "volumes": docker("volume", "ls", "-q", "--filter", label).split(),
        "networks": docker("network", "ls", "-q", "--filter", label).split(),
        "app dir": Path(f"{TEMPLATE_DIR}-{pr}").exists(),
        "state dir": Path(f"/var/lib/pushdeploy/review-{pr}").exists(),
        "route": Path(f"/var/lib/pushdeploy/review/front/review-{pr}.conf").exists(),
    }


def gone(pr: int) -> bool:
    return not any(leftovers(pr).values())


@pytest.fixture(scope="module")
def review(sandbox):
    """The review template set up, no review environment live before or after."""
    for tag in (STAGING_A, STAGING_B):
        subprocess.run(
            [str(ROOT / "scripts/sandbox"), "build-app", tag, "ok"], check=True, timeout=900, capture_output=True
        )
    for env in ("review", "staging", "production"):  # the refusal tests name staging and production too
        result = inv("server.setup", "--env", env)
        assert result.returncode == 0, result.stdout + result.stderr
    for pr in PRS:
        assert inv("review.down", "--pr", str(pr)).returncode == 0
    yield
    for pr in PRS:
        inv("review.down", "--pr", str(pr))


def test_two_review_environments_answer_side_by_side_on_their_own_host_names_with_their_own_databases(review):
    one = inv("review.up", "--pr", "1", "--tag", STAGING_A)
    assert one.returncode == 0, one.stdout + one.stderr
    assert f"review url: http://pr-1.{DOMAIN}:{FRONT_PORT}/" in one.stdout
    two = inv("review.up", "--pr", "2", "--tag", STAGING_B)
    assert two.returncode == 0, two.stdout + two.stderr

    assert f"Pixel version {STAGING_A}" in served(1, STAGING_A)
    assert f"Pixel version {STAGING_B}" in served(2, STAGING_B)
    status, body = get(9)
    assert status == 404 and "no review environment" in body

    # Own databases: visits to pr-1 count in review-1's database only.
    before_one, before_two = visits(1), visits(2)
    for _ in range(3):
        assert get(1)[0] == 200
    assert visits(1) == before_one + 3
    assert visits(2) == before_two

    listing = inv("review.list")
    assert listing.returncode == 0, listing.stderr
    for pr, tag in ((1, STAGING_A), (2, STAGING_B)):
        line = next(line for line in listing.stdout.splitlines() if f"review-{pr} " in line)
        assert tag in line and f"http://pr-{pr}.{DOMAIN}:{FRONT_PORT}/" in line and "ok" in line

    # Idempotent: the same request again changes nothing; a new tag updates in place.
    again = inv("review.up", "--pr", "1", "--tag", STAGING_A)
    assert again.returncode == 0 and "already runs" in again.stdout
    update = inv("review.up", "--pr", "2", "--tag", STAGING_A)
    assert update.returncode == 0, update.stdout + update.stderr
    assert f"Pixel version {STAGING_A}" in served(2, STAGING_A)
    assert visits(2) >= before_two  # the same database, kept across the update


def test_past_the_cap_review_up_is_refused_clearly_and_makes_nothing(review):
    result = inv("review.up", "--pr", "3", "--tag", STAGING_A)
    assert result.returncode == 69, result.stdout + result.stderr
    assert "review_max: 2" in result.stdout + result.stderr
    assert "inv review.down" in result.stdout + result.stderr
    assert gone(3), leftovers(3)


@pytest.mark.parametrize("pr", ["abc", "../x", "0", "1;id", "12345678"])
def test_the_client_refuses_a_pull_request_number_that_is_not_one(review, pr):
    result = inv("review.up", "--pr", pr, "--tag", STAGING_A)
    assert result.returncode == 2 and "not a pull request number" in result.stderr


def test_the_client_refuses_a_template_that_is_not_one(review):
    result = inv("review.up", "--pr", "4", "--tag", STAGING_A, "--template", "staging")
    assert result.returncode == 2 and "not a review template" in result.stderr


@pytest.mark.parametrize(
    ("request_line", "says"),
    [
        (f"review-up review-abc {STAGING_A}", "invalid review environment 'review-abc'"),
        (f"review-up ../x {STAGING_A}", "refused"),
        (f"review-up review-01 {STAGING_A}", "invalid review environment"),
        (f"review-up staging-4 {STAGING_A}", "'staging' is not a review template"),
        (f"review-up production-4 {STAGING_A}", "'production' is not a review template"),
        ("review-down staging", "invalid review environment 'staging'"),
        ("review-down review", "invalid review environment 'review'"),
        ("review-list staging", "'staging' is not a review template"),
        (f"review-up review-4 {STAGING_A} --url=$(id)", "refused"),
        (f"deploy review {STAGING_A}", "'review' is a review template, not an environment"),
        ("db-dump production", "refused"),
        ("db-restore staging --from=production", "refused"),
    ],
)
def test_the_server_refuses_names_outside_the_template_through_openssh(review, request_line, says):
    result = ssh_raw(request_line)
    assert result.returncode == 64, result.stdout + result.stderr
    assert says in result.stderr
    assert gone(4)
    assert not Path("/var/lib/pushdeploy/staging-4").exists() and not Path("/srv/pushdeploy/pixel-staging-4").exists()


@pytest.mark.parametrize(
    ("words", "says"),
    [
        (["review-up", "../x", STAGING_A], "invalid review environment '../x'"),
        (["review-down", "review-abc"], "invalid review environment 'review-abc'"),
        (["db-dump", "production"], "admin connection only"),
    ],
)
def test_bin_deploy_refuses_them_again_without_the_entrypoint(review, words, says):
    # The deploy account calling sudo bin/deploy itself: what the entrypoint would stop, bin/deploy stops too.
    result = subprocess.run(
        ["sudo", "-u", "pd-deploy", "sudo", "-n", "/opt/pushdeploy/bin/deploy", *words],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 64, result.stdout + result.stderr
    assert says in result.stderr and result.stdout == ""


def test_review_down_removes_everything_and_is_idempotent(review):
    assert not gone(1) and not gone(2)
    history = json.loads(Path("/var/lib/pushdeploy/review-1/history.jsonl").read_text().splitlines()[-1])
    assert history["env"] == "review-1" and history["outcome"] == "ok"

    first = inv("review.down", "--pr", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert gone(1), leftovers(1)
    status, _ = get(1)
    assert status == 404  # the front proxy still serves review-2, but no longer pr-1
    assert f"Pixel version {STAGING_A}" in served(2, STAGING_A)

    assert inv("review.down", "--pr", "2").returncode == 0
    assert gone(2), leftovers(2)
    # With the last one, the shared front proxy and its network go too.
    assert not docker("ps", "-aq", "--filter", "name=pushdeploy-review-front").split()
    assert not docker("network", "ls", "-q", "--filter", "name=pushdeploy-review").split()

    again = inv("review.down", "--pr", "2")
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_a_failed_first_review_up_leaves_nothing(review):
    # A build that was never pushed: the pull fails after the environment was made.
    result = inv("review.up", "--pr", "3", "--tag", "f0f0f0f")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "nothing was left behind" in result.stdout + result.stderr
    assert gone(3), leftovers(3)


def review_up_process(pr: int) -> int | None:
    """The root bin/deploy of `review-up review-PR`: sudo's child (not its own subshells)."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            args = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        procs[int(entry.name)] = (comm, args, parent)
    for pid, (comm, args, parent) in procs.items():
        if (
            comm != "sudo"
            and b"review-up" in args
            and f"review-{pr}".encode() in args
            and procs.get(parent, ("",))[0] == "sudo"
        ):
            return pid
    return None


@pytest.mark.parametrize("seed", [1, 2])
def test_a_first_review_up_stopped_at_a_random_moment_leaves_nothing(review, seed):
    """A shutdown (SIGTERM to the server-side review-up) while it makes the environment,
    pulls, migrates or routes: whatever it hit, nothing of review-3 is left behind."""
    # PD_FAULT_AT=SECONDS replays a moment this test printed.
    moment = float(
        os.environ.get("PD_FAULT_AT") or random.Random(seed * 104729 + int(time.time()) // 86400).uniform(0.0, 6.0)
    )
    client = subprocess.Popen(
        [sys.executable, "-m", "invoke", "review.up", "--pr", "3", "--tag", STAGING_A],
        cwd=ROOT,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline, pid = time.monotonic() + 30, None
    while pid is None and time.monotonic() < deadline and client.poll() is None:
        pid = review_up_process(3)
        time.sleep(0.02)
    try:
        assert pid, "the server-side review-up never started"
        time.sleep(moment)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        output, _ = client.communicate(timeout=300)
        print(f"stopped after {moment:.2f}s (exit {client.returncode}):\n{output}")
        if client.returncode == 0:  # it had finished: then it is whole
            assert f"Pixel version {STAGING_A}" in served(3, STAGING_A)
            assert inv("review.down", "--pr", "3").returncode == 0
        assert gone(3), leftovers(3)
        assert review_up_process(3) is None
    finally:
        if not gone(3):
            client.kill()
            inv("review.down", "--pr", "3")


def test_a_review_environment_can_start_from_productions_newest_backup_scrubbed_and_is_pruned_by_age(server, review):
    if not list(Path("/var/lib/pushdeploy/production/backups").glob("*.dump")):
        # Run alone: a deploy backs up before it migrates, so the first one saves an empty
        # database. A visit, then a second deploy, backs up rows to scrub.
        assert inv("deploy.production", "--tag", "1.0.0", "--force").returncode == 0
        assert served_version("production") == "1.0.0"  # a visit
        assert inv("deploy.production", "--tag", "1.0.0", "--force").returncode == 0
    seeded = {"INVOKE_DEPLOY_ENVIRONMENTS_REVIEW_REVIEW_SEED": "backup:production"}
    try:
        assert inv("server.setup", "--env", "review", **seeded).returncode == 0
        result = inv("review.up", "--pr", "3", "--tag", STAGING_A, **seeded)
        assert result.returncode == 0, result.stdout + result.stderr
        assert " ok seed " in result.stdout and " ok scrub " in result.stdout
        out = subprocess.run(
            [
                "docker",
                "compose",
                "-p",
                "pixel-review-3",
                "exec",
                "-T",
                "db",
                "psql",
                "-U",
                "pixel",
                "-d",
                "pixel",
                "-tAc",
                "SELECT count(*) FILTER (WHERE path LIKE 'scrubbed-%'), count(*) FILTER (WHERE path NOT LIKE 'scrubbed-%') FROM notes_visit",
            ],
            cwd=f"{TEMPLATE_DIR}-3",
            env=tool_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        scrubbed, unscrubbed = map(int, out.stdout.strip().split("|"))
        assert scrubbed > 0 and unscrubbed == 0
        assert f"Pixel version {STAGING_A}" in served(3, STAGING_A)
        # Prune by age: --dry-run only names it; then it goes like review.down.
        time.sleep(1)
        dry = inv("review.prune", "--older-than", "1s", "--dry-run", **seeded)
        assert dry.returncode == 0 and "review-3" in dry.stdout and not gone(3)
        assert inv("review.prune", "--older-than", "1d", **seeded).returncode == 0 and not gone(3)
        pruned = inv("review.prune", "--older-than", "1s", **seeded)
        assert pruned.returncode == 0 and "removed review-3" in pruned.stdout
        assert gone(3), leftovers(3)
    finally:
        inv("review.down", "--pr", "3", **seeded)
        assert inv("server.setup", "--env", "review").returncode == 0
    assert gone(3), leftovers(3)


def test_review_environments_are_served_over_https_on_their_host_names(review, tmp_path):
    """tls: on the template (a wildcard certificate for *.DOMAIN, files on the server): its front
    proxy serves every review host over HTTPS, plain HTTP redirected; the instances behind it
    serve plain HTTP; without tls: again, the front is made again without port 443."""
    for pr in PRS:
        assert inv("review.down", "--pr", str(pr)).returncode == 0
    certs, port, host = tmp_path / "certs", 8443, f"pr-3.{DOMAIN}"
    testca.site_certificate(certs, f"*.{DOMAIN}")
    settings = (ROOT / "invoke.yaml").read_text()
    tls = f"{{certificate: {certs / 'fullchain.pem'}, key: {certs / 'privkey.pem'}, publish: '127.0.0.1:{port}', hsts: 600}}"
    assert settings.count("      review_template: true\n") == 1
    config = ROOT / f".e2e-review-tls-{os.getpid()}.yaml"  # beside invoke.yaml: its relative paths hold
    config.write_text(
        settings.replace("      review_template: true\n", f"      review_template: true\n      tls: {tls}\n")
    )
    try:
        setup = inv("-f", str(config), "server.setup", "--env", "review")
        assert setup.returncode == 0, setup.stdout + setup.stderr
        assert "the review front proxy serves this certificate from the next review-up" in setup.stdout
        up = inv("-f", str(config), "review.up", "--pr", "3", "--tag", STAGING_A)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"review url: https://{host}:{port}/" in up.stdout, up.stdout
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        deadline, page, body = time.monotonic() + 20, None, ""
        while time.monotonic() < deadline and f"Pixel version {STAGING_A}" not in body:
            try:
                connection = NamedHTTPSConnection("127.0.0.1", port, host, timeout=5, context=context)
                connection.request("GET", "/", headers={"Host": host})
                page = connection.getresponse()
                body = page.read().decode()
                connection.close()
            except OSError:
                time.sleep(0.3)
        assert page is not None and page.status == 200 and f"Pixel version {STAGING_A}" in body, body[:300]
        assert page.getheader("Strict-Transport-Security") == "max-age=600"
        request = urllib.request.Request(f"http://127.0.0.1:{FRONT_PORT}/about/", headers={"Host": host})
        with pytest.raises(urllib.error.HTTPError) as moved:
            urllib.request.build_opener(NoRedirect).open(request, timeout=5)
        assert moved.value.code == 308 and moved.value.headers["Location"] == f"https://{host}/about/"
        assert inv("server.setup", "--env", "review").returncode == 0  # tls: gone
        again = inv("review.up", "--pr", "3", "--tag", STAGING_B)
        assert again.returncode == 0 and f"review url: http://{host}:{FRONT_PORT}/" in again.stdout, again.stdout
        assert f"Pixel version {STAGING_B}" in served(3, STAGING_B)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        config.unlink()
        assert inv("server.setup", "--env", "review").returncode == 0
        assert inv("review.down", "--pr", "3").returncode == 0


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
