"""The client and the server scripts read one protocol file and agree on it."""

import subprocess

import pytest

from pushdeploy import protocol
from tests.unit.test_versions import HOSTILE

LIB = protocol.PROTOCOL_FILE


def bash_matches(variable: str, samples: list[str]) -> list[bool]:
    """Ask bash itself, with the server's own file, whether each sample matches."""
    script = (
        f'. "{LIB}"; export LC_ALL=C; for s in "$@"; do if [[ $s =~ ${variable} ]]; then echo 1; else echo 0; fi; done'
    )
    out = subprocess.run(["bash", "-c", script, "bash", *samples], capture_output=True, text=True, check=True).stdout
    return [flag == "1" for flag in out.split()]


SAMPLES = HOSTILE + [
    "a/../../etc/cron.d/x",
    "20261122T000000Z-ab12cd34",
    "1.4.0",
    "abc1234",
    "1.4.0-rc.1",
    "_x",
    "--id=20261122T000000Z-ab12",
    "--by=circleci:jane",
    "--url=https://circleci.com/gh/o/r/12",
    "--wait=30",
    "--follow",
    "--x=$(id)",
    "--Url=x",
    "staging",
    "a" * 128,
    "a" * 129,
]


@pytest.mark.parametrize("name", ["PD_VERSION_RE", "PD_ARG_RE", "PD_ENV_RE", "PD_ID_RE"])
def test_python_and_bash_agree_on_every_pattern(name):
    samples = [s for s in SAMPLES if "\x00" not in s]
    pattern = {
        "PD_VERSION_RE": protocol.VERSION_RE,
        "PD_ARG_RE": protocol.ARG_RE,
        "PD_ENV_RE": protocol.ENV_RE,
        "PD_ID_RE": protocol.ID_RE,
    }[name]
    assert [protocol.matches(pattern, s) for s in samples] == bash_matches(name, samples)


def test_facts_are_read_from_the_server_file():
    assert protocol.PREFIX == "/opt/pushdeploy"
    assert "deploy" in protocol.VERBS and "status" in protocol.VERBS
    assert protocol.DEPLOY_BIN == "/opt/pushdeploy/bin/deploy"


def test_command_builds_the_line_the_entrypoint_reads():
    line = protocol.command(
        "deploy", "staging", "1.4.0", id="x1", wait=None, follow=False, by="local:me", expect="ab.cd"
    )
    assert line == "deploy staging 1.4.0 --id=x1 --by=local:me --expect=ab.cd"
    assert protocol.command("logs", "staging", follow=True) == "logs staging --follow"


@pytest.mark.parametrize(
    ("verb", "words"),
    [("shell", ["staging"]), ("deploy", ["staging", "1;id"]), ("deploy", ["staging", "$(id)"]), ("status", ["a b"])],
)
def test_command_refuses_what_the_server_would(verb, words):
    with pytest.raises(protocol.InvalidRequest):
        protocol.command(verb, *words)


def test_server_side_hash_matches_what_bin_deploy_computes(tmp_path):
    # Same files, same order, same digest as `server_hash` in bin/deploy.
    out = subprocess.run(
        ["python3", str(protocol.SERVER_DIR / "bin/deploy"), "version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == protocol.server_side().hash
