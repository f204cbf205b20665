"""The server scripts' own checks, run locally: the entrypoint's refusals and .env rewriting."""

import json
import os
import shutil
import subprocess

import pytest

from pushdeploy import protocol
from tests.unit.conftest import server_python

from pdserver import order, status

BIN = protocol.SERVER_DIR / "bin"


@pytest.fixture
def fake_sudo(tmp_path):
    """A `sudo` first on PATH that prints the words it was given instead of running them."""
    path = tmp_path / "sudo"
    path.write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    path.chmod(0o755)
    return tmp_path


def entrypoint(request, fake_sudo):
    env = {"PATH": f"{fake_sudo}:{os.environ['PATH']}"}
    if request is not None:
        env["SSH_ORIGINAL_COMMAND"] = request
    return subprocess.run([str(BIN / "entrypoint")], env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    "request_line",
    [
        None,  # an interactive login
        "",
        "id",
        "bash",
        "sh -c id",
        "deploy staging 1;id",
        "deploy staging $(id)",
        "deploy staging `id`",
        "deploy staging 1.4.0 && id",
        "deploy staging 1.4.0 | id",
        "deploy staging 1.4.0\nid",
        "deploy staging 1/;e${IFS}id>x;#",
        "deploy staging ../../etc",
        "deploy staging -rf",
        "deploy staging --expect=$(id)",
        "__run staging x",
        "teardown staging --volumes",  # the admin connection's only
        "db-dump production",
        "scp -t /tmp",
        "internal-sftp",
        "deploy " + "a " * 20,
        "deploy staging " + "a" * 2000,
    ],
)
def test_entrypoint_refuses_anything_but_the_command_language(request_line, fake_sudo):
    result = entrypoint(request_line, fake_sudo)
    assert result.returncode == protocol.EXIT_USAGE
    assert "refused" in result.stderr
    assert result.stdout == ""  # sudo never ran
    last = result.stderr.splitlines()[-1]
    assert last.startswith(protocol.RESULT_PREFIX)  # the refusal as data, the answer's last line
    data = json.loads(last[len(protocol.RESULT_PREFIX) :])
    assert (data["outcome"], data["exit"], data["verb"]) == ("refused", protocol.EXIT_USAGE, "")
    assert data["error"].startswith("refused: ") and data["error"][len("refused: ") :] in result.stderr


def test_entrypoint_hands_validated_words_to_sudo_bin_deploy(fake_sudo):
    result = entrypoint("deploy  staging 1.4.0 --id=x --by=circleci:jane", fake_sudo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "-n|/opt/pushdeploy/bin/deploy|deploy|staging|1.4.0|--id=x|--by=circleci:jane|"


def rewrite(tmp_path, content: bytes, version: str) -> bytes:
    env_file = tmp_path / ".env"
    env_file.write_bytes(content)
    result = server_python(f"assert envs.write_version(stand_in(APP_DIR={str(tmp_path)!r}), {version!r})")
    assert result.returncode == 0, result.stderr
    return env_file.read_bytes()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b"VERSION=1.0.0\n", b"VERSION=1.4.0\n"),
        (
            b"# keep me\nA=1\nVERSION=1.0.0\nB=  two \\ spaces \n",
            b"# keep me\nA=1\nVERSION=1.4.0\nB=  two \\ spaces \n",
        ),
        (b"A=1\r\nVERSION=0\r\nC=3", b"A=1\r\nVERSION=1.4.0\nC=3"),
        (b"A=1\n", b"A=1\nVERSION=1.4.0\n"),
        (b"A=$HOME\nVERSION=x\n\n\nZ='q'\n", b"A=$HOME\nVERSION=1.4.0\n\n\nZ='q'\n"),
        (b"XVERSION=1\nVERSION=2\nVERSION=3\n", b"XVERSION=1\nVERSION=1.4.0\nVERSION=3\n"),
    ],
)
def test_env_rewrite_changes_only_the_version_line(tmp_path, before, after):
    assert rewrite(tmp_path, before, "1.4.0") == after


def test_env_rewrite_leaves_a_root_only_file(tmp_path):
    rewrite(tmp_path, b"VERSION=1\n", "2")
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".env"]  # no temp file left


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed")
def test_server_scripts_are_shellcheck_clean():
    # bin/deploy is Python (ruff checks it); the bash left is every other file.
    scripts = [
        str(p)
        for p in sorted(BIN.iterdir())
        if p.read_bytes()[:2] == b"#!" and b"bash" in p.read_bytes().split(b"\n", 1)[0]
    ]
    scripts += [str(protocol.PROTOCOL_FILE)]
    result = subprocess.run(["shellcheck", "-x", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def version_lt(a: str, b: str) -> int:
    """0 when A comes before B (as a shell test answers), else 1."""
    return 0 if order.version_lt(a, b) else 1


def last_deploy(path) -> str:
    return status.last_deploy(str(path)) + "\n"


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.9.0", "1.10.0"),
        ("1.4.0-rc.1", "1.4.0"),
        ("1.4.0-rc.1", "1.4.0-rc.2"),
        ("1.4.0", "1.4.1-rc.1"),
        ("0.9.9", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-beta"),
    ],
)
def test_release_order_is_semantic(older, newer):
    assert version_lt(older, newer) == 0
    assert version_lt(newer, older) == 1
    assert version_lt(newer, newer) == 1


def history_of(tmp_path, *records):
    path = tmp_path / "history.jsonl"
    path.write_text(
        "".join(
            f'{{"time":"t","env":"e","kind":"{kind}","version":"{version}","previous":"p","outcome":"{outcome}"}}\n'
            for kind, version, outcome in records
        )
    )
    return path


@pytest.mark.parametrize(
    ("records", "current", "target"),
    [
        ([("deploy", "A", "ok"), ("deploy", "B", "ok"), ("deploy", "C", "ok")], "C", "B"),
        (
            [("deploy", "A", "ok"), ("deploy", "B", "ok"), ("deploy", "C", "ok"), ("rollback", "B", "ok")],
            "B",
            "A",
        ),  # a second rollback goes further back
        ([("deploy", "A", "ok"), ("deploy", "B", "ok"), ("rollback", "A", "ok")], "A", ""),  # nothing before A
        (
            [("deploy", "A", "ok"), ("deploy", "B", "failed"), ("deploy", "C", "ok")],
            "C",
            "A",
        ),  # failed deploys never count
        ([("deploy", "A", "ok"), ("deploy", "B", "ok"), ("deploy", "B", "ok")], "B", "A"),
    ],
)
def test_rollback_goes_to_the_release_before_the_running_one(tmp_path, records, current, target):
    path = history_of(tmp_path, *records)
    tool = str(protocol.SERVER_DIR / "lib/history.py")
    result = subprocess.run(
        ["python3", "-I", tool, "rollback-target", str(path), current], capture_output=True, text=True
    )
    assert result.stdout.strip() == target


def test_status_reads_the_last_deploy_without_python_and_matches_the_slow_way(tmp_path):
    """`append` keeps HISTORY.last; last_deploy reads it (no Python per status) and
    falls back to the history itself when the summary is missing or older."""
    path = tmp_path / "history.jsonl"
    steps = tmp_path / "steps"
    steps.write_text("pull\t0.5\t1\n")
    tool = str(protocol.SERVER_DIR / "lib/history.py")
    for version, outcome, failed in (("1.0.0", "ok", ""), ("1.1.0", "failed", "health")):
        subprocess.run(
            [
                "python3",
                "-I",
                tool,
                "append",
                str(path),
                "time=t",
                "kind=deploy",
                f"version={version}",
                "previous=p",
                f"outcome={outcome}",
                f"failed_step={failed}",
                "by=ci",
                "duration=1.5",
                f"steps=@{steps}",
            ],
            check=True,
        )
    slow = subprocess.run(["python3", "-I", tool, "last", str(path)], capture_output=True, text=True, check=True).stdout
    assert slow == "t deploy of 1.1.0 (was p): failed at health, by ci\n"
    assert (tmp_path / "history.jsonl.last").read_text() == slow
    assert last_deploy(path) == slow
    # A history written after the summary (by an older server side) is read the slow way.
    (tmp_path / "history.jsonl.last").write_text("stale\n")
    os.utime(path, (os.path.getmtime(path) + 5,) * 2)
    assert last_deploy(path) == slow
    assert last_deploy(tmp_path / "none.jsonl") == "none\n"
