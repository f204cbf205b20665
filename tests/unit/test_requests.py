"""The request lines, exactly: plain values in, the line the server reads out."""

import os
import subprocess

import pytest

from pushdeploy import plan, protocol, requests
from pushdeploy.settings import from_config

ID = "20261122T101500Z-0a1b2c3d"
EXPECT = "0123456789abcdef.fedcba9876543210"
ME = "local:dev@example.org"

DEPLOYS = [
    (
        dict(env="staging", version="abc1234", run_id=ID, by=ME, expect=EXPECT),
        f"deploy staging abc1234 --id={ID} --by={ME} --expect={EXPECT}",
    ),
    (
        dict(
            env="staging",
            version="abc1234",
            run_id=ID,
            by="circleci:jane",
            url="https://circleci.com/gh/o/r/42",
            order="1763805300",
            wait=300,
            expect=EXPECT,
        ),
        f"deploy staging abc1234 --id={ID} --wait=300 --order=1763805300 --by=circleci:jane --url=https://circleci.com/gh/o/r/42 --expect={EXPECT}",
    ),
    (
        dict(env="production", version="1.4.0-rc.1", run_id=ID, by=ME, force=True, maintenance=True, expect=EXPECT),
        f"deploy production 1.4.0-rc.1 --id={ID} --force --maintenance --by={ME} --expect={EXPECT}",
    ),
    (
        dict(
            env="production",
            version="1.4.0",
            run_id=ID,
            by=ME,
            skip_migrate=True,
            wait=0,
            url="",
            order=None,
            expect=EXPECT,
        ),
        f"deploy production 1.4.0 --id={ID} --skip-migrate --by={ME} --expect={EXPECT}",
    ),
]

ROLLBACKS = [
    (
        dict(env="production", run_id=ID, by=ME, expect=EXPECT),
        f"rollback production --id={ID} --by={ME} --expect={EXPECT}",
    ),
    (
        dict(
            env="production",
            to="1.3.0",
            run_id=ID,
            by="github:joe",
            url="https://github.com/o/r/actions/runs/7",
            wait=60,
            expect=EXPECT,
        ),
        f"rollback production --to=1.3.0 --id={ID} --wait=60 --by=github:joe --url=https://github.com/o/r/actions/runs/7 --expect={EXPECT}",
    ),
    (
        dict(env="production", run_id=ID, by=ME, skip_migrate=True, expect=EXPECT),
        f"rollback production --id={ID} --skip-migrate --by={ME} --expect={EXPECT}",
    ),
]

QUESTIONS = [
    (requests.status, dict(env="staging", expect=EXPECT), f"status staging --expect={EXPECT}"),
    (requests.history, dict(env="production", limit=5), "history production --limit=5"),
    (requests.logs, dict(env="staging"), "logs staging"),
    (requests.logs, dict(env="staging", follow=True), "logs staging --follow"),
    (requests.maintenance, dict(env="staging", on=True), "maintenance staging on"),
    (requests.maintenance, dict(env="staging", on=False), "maintenance staging off"),
]


@pytest.mark.parametrize(("inputs", "line"), DEPLOYS)
def test_a_deploy_request_is_exactly(inputs, line):
    assert requests.deploy(**inputs) == line


@pytest.mark.parametrize(("inputs", "line"), ROLLBACKS)
def test_a_rollback_request_is_exactly(inputs, line):
    assert requests.rollback(**inputs) == line


@pytest.mark.parametrize(("build", "inputs", "line"), QUESTIONS)
def test_a_question_is_exactly(build, inputs, line):
    assert build(**inputs) == line


@pytest.mark.parametrize(
    ("build", "inputs"),
    [
        (requests.deploy, dict(env="staging", version="abc1234;id", run_id=ID, by=ME, expect=EXPECT)),
        (requests.deploy, dict(env="staging", version="$(id)", run_id=ID, by=ME, expect=EXPECT)),
        (requests.deploy, dict(env="../etc", version="abc1234", run_id=ID, by=ME, expect=EXPECT)),
        (requests.deploy, dict(env="staging", version="-rf", run_id=ID, by=ME, expect=EXPECT)),
        (requests.deploy, dict(env="staging", version="abc1234", run_id=ID, by="local:Jane Doe", expect=EXPECT)),
        (
            requests.deploy,
            dict(
                env="staging", version="abc1234", run_id=ID, by=ME, url="https://ci.example/build?id=1", expect=EXPECT
            ),
        ),
        (requests.deploy, dict(env="staging", version="abc1234", run_id=ID, by=ME, wait=-5, expect=EXPECT)),
        (requests.deploy, dict(env="staging", version="abc1234", run_id=ID, by=ME, expect="$(id)")),
        (
            requests.deploy,
            dict(
                env="staging",
                version="abc1234",
                run_id="x" * 200,
                by="b" * 200,
                url="u" * 200,
                order="1" * 200,
                expect="e" * 200,
            ),
        ),
        (requests.rollback, dict(env="production", to="1.3.0 && id", run_id=ID, by=ME, expect=EXPECT)),
        (requests.rollback, dict(env="production", run_id="", by=ME, expect=EXPECT)),
        (requests.status, dict(env="staging", expect="a\nb")),
        (requests.history, dict(env="staging", limit=-1)),
        (requests.logs, dict(env="staging production")),
    ],
)
def test_anything_the_server_would_refuse_is_refused_before_sending(build, inputs):
    with pytest.raises(protocol.InvalidRequest):
        build(**inputs)


def test_with_a_shared_database_only_the_later_phase_skips_migrations():
    env = from_config({"environments": {"prod": {"hosts": "a.example, b.example, c.example"}}}, {}).environment("prod")
    lines = [
        (
            [h.hostname for h in hosts],
            requests.deploy(env.name, "1.0.0", run_id=f"id-{n}", by=ME, expect=EXPECT, skip_migrate=skip),
        )
        for n, (hosts, skip) in enumerate(plan.phases(env), 1)
    ]
    assert lines == [
        (["a.example"], f"deploy prod 1.0.0 --id=id-1 --by={ME} --expect={EXPECT}"),
        (["b.example", "c.example"], f"deploy prod 1.0.0 --id=id-2 --skip-migrate --by={ME} --expect={EXPECT}"),
    ]
    (_, first), (_, later) = plan.phases(env)
    assert (
        requests.rollback(env.name, run_id="id-1", by=ME, expect=EXPECT, skip_migrate=first)
        == f"rollback prod --id=id-1 --by={ME} --expect={EXPECT}"
    )
    assert (
        requests.rollback(env.name, run_id="id-2", by=ME, expect=EXPECT, skip_migrate=later)
        == f"rollback prod --id=id-2 --skip-migrate --by={ME} --expect={EXPECT}"
    )


@pytest.mark.parametrize("line", [line for _, line in DEPLOYS + ROLLBACKS] + [line for _, _, line in QUESTIONS])
def test_the_entrypoint_hands_every_word_to_bin_deploy(line, tmp_path):
    sudo = tmp_path / "sudo"  # prints the words it was given instead of running them
    sudo.write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    sudo.chmod(0o755)
    environ = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "SSH_ORIGINAL_COMMAND": line}
    result = subprocess.run(
        [str(protocol.SERVER_DIR / "bin" / "entrypoint")], env=environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("|")[:-1] == ["-n", protocol.DEPLOY_BIN, *line.split()]
