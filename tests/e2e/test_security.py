"""The deploy key can deploy and nothing else; host keys are pinned."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import SANDBOX, history_lines, inv, ssh_raw

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("command", [None, "id", "bash -i", "sh -c 'id'", "sudo -l", "cat /etc/shadow", "scp -t /tmp"])
def test_deploy_key_cannot_get_a_shell_or_run_anything(server, command):
    result = ssh_raw(command)
    assert result.returncode != 0
    assert "refused" in result.stderr
    assert "uid=" not in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        "deploy staging 1;id",
        "deploy staging $(id)",
        "deploy staging 1/;e${IFS}id>x;#",
        'deploy staging 1";id;"',
        "deploy staging `id`",
        "deploy staging ../../etc/passwd",
        "__run staging x",
    ],
)
def test_unvalidated_arguments_never_reach_bin_deploy(server, command):
    before = history_lines("staging")
    result = ssh_raw(command)
    assert result.returncode == 64
    assert "refused" in result.stderr
    assert history_lines("staging") == before


def test_a_deploy_id_cannot_name_a_path(server):
    result = ssh_raw("deploy staging a1a1a1a --id=x/../../../../tmp/pwned --force")
    assert result.returncode == 64 and "invalid deploy id" in result.stderr
    assert not list(Path("/tmp").glob("pwned*"))


def test_bin_deploy_checks_again_what_the_entrypoint_let_through(server):
    # Valid words for the entrypoint, but not a version staging accepts: bin/deploy refuses.
    result = ssh_raw("deploy staging latest")
    assert result.returncode == 64
    assert "does not match staging's pattern" in result.stderr
    result = ssh_raw("deploy nosuchenv 1.0.0")
    assert result.returncode == 64 and "not set up" in result.stderr


def test_deploy_key_cannot_forward_ports(server):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [
        "ssh",
        "-p",
        "2222",
        "-i",
        str(SANDBOX / "keys/ci"),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={SANDBOX / 'known_hosts'}",
        "-N",
        "-L",
        f"127.0.0.1:{port}:127.0.0.1:8081",
        "pd-deploy@127.0.0.1",
    ]
    tunnel = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and tunnel.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                    conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    conn.settimeout(5)
                    answer = conn.recv(100)
                break
            except OSError:
                time.sleep(0.2)
        else:
            answer = b""
        assert not answer.startswith(b"HTTP/"), "the tunnel reached the site"
    finally:
        tunnel.kill()
        _, err = tunnel.communicate()
    assert "administratively prohibited" in err or tunnel.returncode != 0


def test_deploy_key_gets_no_pty(server):
    result = ssh_raw("version", "-tt")
    assert "PTY allocation request failed" in result.stderr


def test_server_side_is_root_owned_and_not_writable_by_the_deploy_account(server):
    for path in (
        "/opt",
        "/opt/pushdeploy",
        "/opt/pushdeploy/bin",
        "/opt/pushdeploy/bin/deploy",
        "/opt/pushdeploy/bin/entrypoint",
        "/opt/pushdeploy/lib/protocol.sh",
    ):
        info = os.stat(path)
        assert info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path
    env_file = Path("/srv/pushdeploy/pixel-staging/.env").stat()
    assert env_file.st_uid == 0 and stat.S_IMODE(env_file.st_mode) == 0o600
    keys = Path("/home/pd-deploy/.ssh/authorized_keys")
    assert keys.stat().st_uid == 0
    assert all(
        line.startswith('restrict,command="/opt/pushdeploy/bin/entrypoint" ') for line in keys.read_text().splitlines()
    )
    sudoers = subprocess.run(["sudo", "-l", "-U", "pd-deploy"], capture_output=True, text=True).stdout
    assert "(root) NOPASSWD: /opt/pushdeploy/bin/deploy" in sudoers
    assert "ALL) ALL" not in sudoers


def test_a_changed_host_key_stops_the_deploy(server):
    other = SANDBOX / "other_host_key"
    if not other.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fake = f"[127.0.0.1]:2222 {other.with_suffix('.pub').read_text().split()[0]} {other.with_suffix('.pub').read_text().split()[1]}"
    empty = SANDBOX / "empty_known_hosts"
    empty.write_text("")
    before = history_lines("staging")
    result = inv("deploy.staging", "--tag", "a1a1a1a", DEPLOY_KNOWN_HOSTS=fake, DEPLOY_KNOWN_HOSTS_FILE=str(empty))
    assert result.returncode != 0
    assert "HAS CHANGED" in result.stdout + result.stderr
    assert history_lines("staging") == before


def test_an_unknown_host_key_is_refused_with_a_way_to_pin_it(server):
    empty = SANDBOX / "empty_known_hosts"
    empty.write_text("")
    result = inv("deploy.status", "--env", "staging", DEPLOY_KNOWN_HOSTS_FILE=str(empty))
    assert result.returncode != 0
    assert "not pinned" in result.stdout and "inv server.trust" in result.stdout
    pinned = inv("server.trust", "--env", "staging", "--yes", DEPLOY_KNOWN_HOSTS_FILE=str(empty))
    assert pinned.returncode == 0 and "pinned in" in pinned.stdout
    assert inv("deploy.status", "--env", "staging", DEPLOY_KNOWN_HOSTS_FILE=str(empty)).returncode == 0
