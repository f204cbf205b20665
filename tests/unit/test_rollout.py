"""Rolling deploys: batches, host selection, what a failed batch undoes."""

import json

import pytest

from pushdeploy import protocol, rollout
from pushdeploy.settings import Host

HOSTS = tuple(Host("pd-deploy", f"10.0.0.{i}") for i in range(1, 8))


def names(batches):
    return [([h.hostname.rsplit(".", 1)[1] for h in b.hosts], b.migrate) for b in batches]


@pytest.mark.parametrize(
    ("size", "total", "expected"),
    [
        ("1", 7, 1),
        ("2", 7, 2),
        ("20", 7, 7),
        (3, 7, 3),
        ("50%", 7, 4),
        ("100%", 7, 7),
        ("1%", 7, 1),
        ("34%", 3, 2),
        ("25%", 10, 3),
    ],
)
def test_a_batch_holds_a_number_or_a_share_of_the_hosts(size, total, expected):
    assert rollout.batch_hosts(size, total) == expected


@pytest.mark.parametrize("size", ["0", "0%", "101%", "-1", "x", "2.5", "", "10000"])
def test_batch_sizes_that_mean_nothing_are_refused(size):
    with pytest.raises(ValueError):
        rollout.batch_hosts(size, 5)


@pytest.mark.parametrize(
    ("size", "migrate_on", "expected"),
    [
        ("100%", "first", [(["1"], True), (["2", "3", "4", "5", "6", "7"], False)]),
        ("2", "first", [(["1"], True), (["2", "3"], False), (["4", "5"], False), (["6", "7"], False)]),
        ("50%", "first", [(["1"], True), (["2", "3", "4", "5"], False), (["6", "7"], False)]),
        ("3", "each", [(["1", "2", "3"], True), (["4", "5", "6"], True), (["7"], True)]),
        ("100%", "each", [(["1", "2", "3", "4", "5", "6", "7"], True)]),
    ],
)
def test_the_first_host_migrates_alone_then_batches_follow(size, migrate_on, expected):
    assert names(rollout.batches(HOSTS, size, migrate_on)) == expected


def test_one_host_is_one_batch():
    assert names(rollout.batches(HOSTS[:1], "2", "first")) == [(["1"], True)]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (None, HOSTS),
        ("", HOSTS),
        ("10.0.0.3", HOSTS[2:3]),
        ("10.0.0.5,10.0.0.2", (HOSTS[1], HOSTS[4])),
        (" 10.0.0.1 , 10.0.0.1", HOSTS[:1]),
    ],
)
def test_hosts_picks_a_subset_in_the_environments_order(wanted, expected):
    assert rollout.select(HOSTS, wanted) == expected


def test_hosts_with_a_port_are_named_with_it():
    hosts = (Host("u", "127.0.0.1", 2222), Host("u", "127.0.0.2", 2222))
    assert rollout.select(hosts, "127.0.0.2:2222") == hosts[1:]


@pytest.mark.parametrize("wanted", ["10.0.0.9", "10.0.0.1,nope", ","])
def test_an_unknown_host_is_refused_with_the_known_ones(wanted):
    with pytest.raises(rollout.BadSelection, match="this environment has 10.0.0.1, 10.0.0.2"):
        rollout.select(HOSTS, wanted)


DEPLOYED = {"outcome": "ok", "kind": "deploy", "version": "1.4.0", "previous": "1.3.0", "serving": "1.4.0"}
FAILED = {"outcome": "failed", "kind": "deploy", "version": "1.4.0", "previous": "1.3.0", "serving": "1.3.0"}


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (DEPLOYED, "1.3.0"),
        ({**DEPLOYED, "previous": "none"}, None),
        ({**FAILED, "failed_step": "health"}, None),
        ({}, None),
    ],
)
def test_the_previous_version_comes_from_the_hosts_result(output, expected):
    assert rollout.previous_version(output) == expected


def test_undo_goes_back_where_it_can_and_names_the_rest():
    back, stuck = rollout.undo([(HOSTS[0], "1.3.0"), (HOSTS[1], None), (HOSTS[2], "1.2.0")])
    assert back == [(HOSTS[0], "1.3.0"), (HOSTS[2], "1.2.0")]
    assert stuck == [HOSTS[1]]


def test_the_summary_is_one_aligned_row_per_host():
    text = rollout.table(
        [
            rollout.Outcome(HOSTS[0], "rolled back", "1.3.0"),
            rollout.Outcome(HOSTS[1], "failed", "1.3.0", "health check"),
        ]
    )
    assert text.splitlines() == [
        "host      result       version",
        "10.0.0.1  rolled back  1.3.0",
        "10.0.0.2  failed       1.3.0    health check",
    ]


def settings_for(**raw):
    from pushdeploy.settings import from_config

    return from_config(
        {"app": "pixel", "environments": {"production": {"hosts": ["a", "b", "c"], **raw}}}, {}
    ).environment("production")


def test_batch_settings_default_to_the_first_host_then_all_and_roll_back():
    env = settings_for()
    assert (env.batch_size, env.on_failure) == ("100%", "rollback")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"batch_size": "0"}, "batch_size"),
        ({"batch_size": "half"}, "batch_size"),
        ({"on_failure": "ignore"}, "on_failure"),
    ],
)
def test_bad_batch_settings_name_their_key(raw, key):
    from pushdeploy.settings import ConfigError

    with pytest.raises(ConfigError, match=f"deploy.environments.production.{key}"):
        settings_for(**raw)


@pytest.mark.parametrize(
    ("output", "serves", "switched_to"),
    [
        ({**FAILED, "failed_step": "pull"}, "1.3.0", None),
        ({**FAILED, "kind": "rollback", "version": "1.2.0", "serving": "none"}, None, None),
        (DEPLOYED, None, "1.4.0"),
        ({}, None, None),
    ],
)
def test_what_a_host_serves_after_its_deploy_comes_from_its_result(output, serves, switched_to):
    assert rollout.serving_after_failure(output) == serves
    assert rollout.new_version(output) == switched_to


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (["2026-11-22T04:24:07Z deploy of 1.4.0 to production (running: 1.3.0) by local:me", "==> preflight"], True),
        (["==> pull", "connection lost (EOFError); reattaching (1/2)"], True),
        (["the connection closed before the command ended; reattaching (1/2)"], False),
        (
            [
                "error: pd-deploy@h3: cannot connect: [Errno 111] Connection refused; check the address and that sshd runs"
            ],
            False,
        ),
    ],
)
def test_a_host_lost_mid_deploy_is_told_from_one_never_reached(output, expected):
    assert rollout.reached(output) == expected


def answer(i, code, *lines, message=""):
    """A host's answer as the client hears it: its lines and its result line, read in one place."""
    from pushdeploy.output import Collector

    heard = Collector()
    heard.write("".join(line + "\n" for line in lines))
    heard.flush()
    return rollout.Answer(HOSTS[i], code, tuple(heard.lines), message, heard.result)


def result(**data):
    return protocol.RESULT_PREFIX + json.dumps(data)


READY = ("version: 1.3.0", "deploy in progress: no", "last deploy: ...", result(version="1.3.0", deploying=""))


def test_the_preflight_lets_a_deploy_go_only_if_every_host_can_take_it():
    answers = [answer(0, 0, *READY), answer(1, 0, *READY)]
    assert rollout.not_ready(answers, "production") == []
    assert answers[0].version == "1.3.0"


def test_the_preflight_names_each_host_that_cannot_go_and_why():
    answers = [
        answer(0, 0, *READY),
        answer(
            1,
            64,
            "pushdeploy: environment 'production' is not set up on this server: run `inv server.setup --env production`",
            result(
                error="environment 'production' is not set up on this server: run `inv server.setup --env production`"
            ),
        ),
        answer(
            2,
            78,
            "pushdeploy: the server side here (abc) differs from your project's (def): run `inv server.setup --env production`",
            result(
                error="the server side here (abc) differs from your project's (def): run `inv server.setup --env production`"
            ),
        ),
        answer(3, 255, message="pd-deploy@10.0.0.4: cannot connect: [Errno 111] Connection refused"),
        answer(
            4,
            0,
            "version: 1.3.0",
            "deploy in progress: 1.4.0 by ci since 2026-11-22T04:00:00Z",
            result(version="1.3.0", deploying="1.4.0 by ci since 2026-11-22T04:00:00Z"),
        ),
    ]
    refusals = rollout.not_ready(answers, "production")
    assert [(r.host.hostname, r.code) for r in refusals] == [
        ("10.0.0.2", 78),
        ("10.0.0.3", 78),
        ("10.0.0.4", 255),
        ("10.0.0.5", 75),
    ]
    assert refusals[0].reason.startswith("environment 'production' is not set up on this server")
    assert "Connection refused" in refusals[2].reason
    assert "another deploy runs there (1.4.0 by ci since" in refusals[3].reason
    assert rollout.refusal_code(refusals) == 78  # `inv server.setup` is what to do first
    assert rollout.refusal_code(refusals[2:]) == 255
    assert rollout.not_ready(answers[4:], "production", wait=300) == []  # --wait: it queues behind that deploy


def test_a_hosts_result_line_is_read_as_data_and_never_shown(capsys):
    from pushdeploy.output import HostWriter

    writer = HostWriter("h1")
    writer.write("deployed 1.4.0 to production in 4.2s (was 1.3.0)\n")
    writer.write(protocol.RESULT_PREFIX + json.dumps(DEPLOYED) + "\n")
    writer.flush()
    assert writer.lines == ["deployed 1.4.0 to production in 4.2s (was 1.3.0)"]
    assert writer.result == DEPLOYED and rollout.previous_version(writer.result) == "1.3.0"
    assert protocol.RESULT_PREFIX not in capsys.readouterr().out
