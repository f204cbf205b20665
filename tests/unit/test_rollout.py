"""Rolling deploys: batches, host selection, what a failed batch undoes."""

import pytest

from deploy import rollout
from deploy.settings import Host

HOSTS = tuple(Host("pd-deploy", f"10.0.0.{i}") for i in range(1, 8))


def names(batches):
    return [([h.hostname.rsplit(".", 1)[1] for h in b.hosts], b.migrate) for b in batches]


@pytest.mark.parametrize(
    ("size", "total", "expected"),
    [("1", 7, 1), ("2", 7, 2), ("20", 7, 7), (3, 7, 3), ("50%", 7, 4), ("100%", 7, 7), ("1%", 7, 1), ("34%", 3, 2), ("25%", 10, 3)],
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
    [(None, HOSTS), ("", HOSTS), ("10.0.0.3", HOSTS[2:3]), ("10.0.0.5,10.0.0.2", (HOSTS[1], HOSTS[4])), (" 10.0.0.1 , 10.0.0.1", HOSTS[:1])],
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


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (["==> switch", "deployed 1.4.0 to production in 4.2s (was 1.3.0)"], "1.3.0"),
        (["deployed 1.4.0 to production in 4.2s (was none)"], None),
        (["deploy of 1.4.0 to production FAILED at health after 9.1s; production serves 1.3.0"], None),
        ([], None),
    ],
)
def test_the_previous_version_comes_from_the_hosts_last_line(output, expected):
    assert rollout.previous_version(output) == expected


def test_undo_goes_back_where_it_can_and_names_the_rest():
    back, stuck = rollout.undo([(HOSTS[0], "1.3.0"), (HOSTS[1], None), (HOSTS[2], "1.2.0")])
    assert back == [(HOSTS[0], "1.3.0"), (HOSTS[2], "1.2.0")]
    assert stuck == [HOSTS[1]]


def test_the_summary_is_one_aligned_row_per_host():
    text = rollout.table([rollout.Outcome(HOSTS[0], "rolled back", "1.3.0"), rollout.Outcome(HOSTS[1], "failed", "1.3.0", "health check")])
    assert text.splitlines() == [
        "host      result       version",
        "10.0.0.1  rolled back  1.3.0",
        "10.0.0.2  failed       1.3.0    health check",
    ]


def settings_for(**raw):
    from deploy.settings import from_config

    return from_config({"app": "pixel", "environments": {"production": {"hosts": ["a", "b", "c"], **raw}}}, {}).environment("production")


def test_batch_settings_default_to_the_first_host_then_all_and_roll_back():
    env = settings_for()
    assert (env.batch_size, env.on_failure) == ("100%", "rollback")


@pytest.mark.parametrize(("raw", "key"), [({"batch_size": "0"}, "batch_size"), ({"batch_size": "half"}, "batch_size"), ({"on_failure": "ignore"}, "on_failure")])
def test_bad_batch_settings_name_their_key(raw, key):
    from deploy.settings import ConfigError

    with pytest.raises(ConfigError, match=f"deploy.environments.production.{key}"):
        settings_for(**raw)
