"""The multi-host sandbox (scripts/sandbox-hosts): three separate hosts on this machine.

Each host answers SSH on its own address with its own key, has its own files,
sudoers and dockerd (pulling from the sandbox registry), reaches the database
host, sits behind the load balancer, and `down` leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, SANDBOX, inv
from tests.e2e.multihost import RUN, STATE, script
from tests.e2e.multihost import host_docker as docker

pytestmark = pytest.mark.e2e

HOSTS = {"h1": "10.213.0.11", "h2": "10.213.0.12", "h3": "10.213.0.13"}
DB_ADDR = "10.213.0.2"
LB = "http://127.0.0.1:8090/"
IMAGE = "127.0.0.1:5000/pushdeploy/base:bookworm"
ENV = "hoststest"
MARKER = "/srv/pushdeploy/pd-hosts-test/marker"


def ssh(addr: str, command: str, *, port: int = 22, timeout: int = 30) -> subprocess.CompletedProcess:
    """OpenSSH as pd-admin with the hosts' admin key, checking the pinned host key."""
    argv = [
        "ssh",
        "-p",
        str(port),
        "-i",
        str(STATE / "keys/admin"),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={STATE / 'known_hosts'}",
        "-o",
        "StrictHostKeyChecking=yes",
        f"pd-admin@{addr}",
        command,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def get(url: str, timeout: float = 5) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(), response.headers.get("X-PD-Upstream", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers.get("X-PD-Upstream", "")


def our_processes() -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(STATE) + "/" in cmdline or str(RUN) + "/" in cmdline or "sandbox_relay.py" in cmdline:
            found.append(f"{proc.name} {cmdline}")
    return found


def processes_in(namespaces: set[str]) -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        for kind in ("net", "mnt"):
            try:
                if os.readlink(proc / "ns" / kind) in namespaces:
                    found.append(proc.name)
            except OSError:
                pass
    return found


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def mounts() -> list[str]:
    return subprocess.run(
        ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True
    ).stdout.splitlines()


@pytest.fixture(scope="module")
def hosts(sandbox):
    """Three hosts, a database host and the load balancer, on top of the one-host sandbox."""
    if os.geteuid() != 0:
        pytest.skip("the multi-host sandbox needs root (namespaces, sshd, dockerd)")
    missing = [
        name
        for name, present in (
            ("nginx", shutil.which("nginx")),
            ("postgresql", list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))),
        )
        if not present
    ]
    if missing:
        pytest.skip(f"the multi-host sandbox needs {' and '.join(missing)} (apt-get install -y nginx-light postgresql)")
    start = time.monotonic()
    result = script("up", "--hosts", "3")
    print(f"up --hosts 3 took {time.monotonic() - start:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield HOSTS
    finally:
        script("down")


def test_status_says_everything_is_up(hosts):
    result = script("status")
    assert result.returncode == 0, result.stdout + result.stderr
    for host, addr in hosts.items():
        assert re.search(rf"^{host} +up +netns pd-{host}, {re.escape(addr)}", result.stdout, re.M)
    assert re.search(r"^lb +up .*127\.0\.0\.1:8090", result.stdout, re.M)


def test_each_host_answers_ssh_on_its_own_address_with_its_own_key(hosts):
    keys = {}
    for host, addr in hosts.items():
        scanned = subprocess.run(
            ["ssh-keyscan", "-t", "ed25519", addr], capture_output=True, text=True, timeout=30
        ).stdout.split()
        keys[host] = scanned[2]
        assert keys[host] == (STATE / f"hosts/{host}/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]
        result = ssh(addr, "hostname; sudo -n id -un")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [host, "root"]
    assert len(set(keys.values())) == 3


def test_files_written_on_one_host_stay_on_it(hosts):
    write = ssh(
        hosts["h1"],
        f"sudo -n install -d {os.path.dirname(MARKER)} && echo written-on-h1 | sudo -n tee {MARKER} >/dev/null && cat {MARKER}",
    )
    assert write.returncode == 0, write.stderr
    assert write.stdout.strip() == "written-on-h1"
    assert ssh(hosts["h2"], f"test -e {MARKER} && echo present || echo absent").stdout.strip() == "absent"
    assert not Path(MARKER).exists()  # the machine itself
    assert (STATE / "hosts/h1/fs/srv-pushdeploy/pd-hosts-test/marker").read_text() == "written-on-h1\n"
    # sudoers are the host's own too: only the admin rule, none of the machine's files.
    assert ssh(hosts["h3"], "ls /etc/sudoers.d").stdout.split() == ["pushdeploy-hosts-admin"]


def test_each_dockerd_pulls_from_the_registry_and_publishes_on_its_address(hosts):
    def start_web(host: str) -> str:
        pulled = docker(host, "pull", "-q", IMAGE)
        assert pulled.returncode == 0, pulled.stderr
        docker(host, "network", "create", "pd-web")
        page = f"mkdir -p /w && echo {host} >/w/index.html && cd /w && exec python3 -m http.server 8000"
        run = docker(
            host,
            "run",
            "-d",
            "--name",
            "pd-web",
            "--network",
            "pd-web",
            "-p",
            f"{hosts[host]}:80:8000",
            IMAGE,
            "sh",
            "-c",
            page,
        )
        assert run.returncode == 0, run.stderr
        return docker(host, "info", "--format", "{{.Name}}").stdout.strip()

    with ThreadPoolExecutor(3) as pool:
        names = dict(zip(hosts, pool.map(start_web, hosts), strict=True))
    assert names == {host: host for host in hosts}  # three daemons, one per host
    for host, addr in hosts.items():
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body, _ = get(f"http://{addr}/")
                break
            except OSError:
                assert time.monotonic() < deadline, f"{host} does not answer on {addr}:80"
                time.sleep(0.2)
        assert (status, body.strip()) == (200, host)


def test_the_database_host_answers_from_h2(hosts):
    db = dict(
        line.split("=", 1)
        for line in (STATE / "db.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert db["PGHOST"] == DB_ADDR
    query = "select current_user || ' from ' || host(inet_client_addr())"
    result = ssh(
        hosts["h2"],
        f'PGPASSWORD={db["PGPASSWORD"]} psql -h {db["PGHOST"]} -U {db["PGUSER"]} -d {db["PGDATABASE"]} -tAc "{query}"',
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pixel from {hosts['h2']}"


def test_the_load_balancer_spreads_requests_and_skips_a_host_that_stopped(hosts):
    served = [get(LB) for _ in range(12)]
    assert {status for status, _, _ in served} == {200}
    assert {body.strip() for _, body, _ in served} == set(hosts)
    assert all(upstream.startswith(hosts[body.strip()]) for _, body, upstream in served)
    assert docker("h2", "stop", "-t", "1", "pd-web").returncode == 0
    start = time.monotonic()
    served = [get(LB) for _ in range(12)]
    assert [status for status, _, _ in served] == [200] * 12
    assert {body.strip() for _, body, _ in served} == {"h1", "h3"}
    assert time.monotonic() - start < 5  # a refused connection is retried at once on the next host


def test_delay_adds_round_trip_time_to_ssh(hosts):
    def timed(port: int, addr: str) -> float:
        start = time.monotonic()
        result = ssh(addr, "true", port=port)
        assert result.returncode == 0, result.stderr
        return time.monotonic() - start

    assert script("delay", "100").returncode == 0
    try:
        direct = min(timed(22, hosts["h1"]) for _ in range(2))
        delayed = min(timed(2201, "10.213.0.1") for _ in range(2))
        print(f"ssh true: direct {direct:.2f} s, through the +100 ms proxy {delayed:.2f} s")
        assert delayed > direct + 0.3  # an SSH login takes several round trips
    finally:
        assert script("delay", "off").returncode == 0


def test_server_setup_installs_on_each_host_separately(hosts, tmp_path):
    server_env = tmp_path / "hoststest.env"
    server_env.write_text((SANDBOX / "server-env/staging.env").read_text())
    server_env.chmod(0o600)
    config = tmp_path / "hosts.yaml"
    config.write_text(
        "deploy:\n"
        "  environments:\n"
        f"    {ENV}:\n"
        f"      hosts: [{', '.join(hosts.values())}]\n"
        f"      project: pixel-{ENV}\n"
        f"      app_dir: /srv/pushdeploy/pixel-{ENV}\n"
        "      docker_host: unix:///run/pd-hosts/self/docker.sock\n"
        "      files:\n"
        f"        docker-compose.yml: {ROOT}/example/docker-compose.staging.yml\n"
        f"        docker/etc/nginx/conf.d/pixel.conf: {ROOT}/example/docker/etc/nginx/conf.d/pixel.conf\n"
        f"      server_env: {server_env}\n"
    )
    dotenv = str(STATE / "deploy.env")
    setup = inv("-f", str(config), "server.setup", "--env", ENV, DEPLOY_DOTENV=dotenv)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "on 3 host(s)" in setup.stdout
    again = inv("-f", str(config), "server.setup", "--env", ENV, DEPLOY_DOTENV=dotenv)
    assert again.returncode == 0 and len(re.findall(r"\| ok in [0-9.]+s: nothing changed", again.stdout)) == 3, (
        again.stdout
    )
    assert "unable to resolve" not in setup.stdout + setup.stderr  # each host knows its own name
    check = inv("-f", str(config), "server.check", "--env", ENV, DEPLOY_DOTENV=dotenv)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (
        len(re.findall(r"\| docker: \d+\.", check.stdout)) == 3
    )  # each host's own dockerd, through the one docker_host
    for host in hosts:
        assert (STATE / f"hosts/{host}/fs/etc-pushdeploy/{ENV}.conf").is_file()
        assert (STATE / f"hosts/{host}/fs/sudoers.d/pushdeploy-pd-deploy").is_file()
    assert not Path(f"/etc/pushdeploy/{ENV}.conf").exists()  # nothing reached the machine's own files
    assert not Path(f"/srv/pushdeploy/pixel-{ENV}").exists()


def test_down_leaves_nothing_behind(hosts):
    namespaces = {f"net:[{os.stat(f'/run/netns/pd-{host}').st_ino}]" for host in hosts}
    namespaces |= {f"mnt:[{os.stat(STATE / f'ns/{host}.mnt').st_ino}]" for host in hosts}
    namespaces.add(f"net:[{os.stat('/run/netns/pd-db').st_ino}]")
    made_by_dockerds = set()
    for host in hosts:
        out = subprocess.run(
            ["ip", "-n", f"pd-{host}", "-o", "link", "show"], capture_output=True, text=True, check=True
        ).stdout
        made_by_dockerds |= {line.split(": ")[1].split("@")[0] for line in out.splitlines()} - {"lo", "eth0"}
    assert any(name.startswith("br-") for name in made_by_dockerds)
    start = time.monotonic()
    result = script("down")
    print(f"down took {time.monotonic() - start:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not re.search(r"^pd-", netns, re.M)
    left = links()
    assert not {name for name in left if name.startswith("pd-") or name == "docker_gwbridge"}
    assert not made_by_dockerds & left
    assert not [m for m in mounts() if m.startswith((str(STATE), str(RUN), "/run/netns/pd-"))]
    assert our_processes() == []
    assert processes_in(namespaces) == []
    assert not STATE.exists() and not RUN.exists()
    assert script("status").returncode == 3
