"""Retiring containers: how bin/deploy counts the requests a container still owes an
answer, from its /proc/net/tcp and tcp6 (pdserver/drain.py open_requests), table-tested
with a stand-in for `docker` that serves the table."""

import pytest

from pdserver import drain
from pdserver import env as envs

ENV = envs.Env("staging", "/nonexistent/staging.conf", dict(envs.DEFAULTS, APP_DIR="/srv/app", PROJECT="p"))

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
LISTEN_8000 = "   0: 00000000:1F40 00000000:0000 0A 00000000:00000003 00:00000000 00000000 10001 0 1 1"
LISTEN6_8000 = "   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 10001 0 1 1"


def line(local_port: str, remote_port: str, state: str) -> str:
    return (
        f"   1: 030012AC:{local_port} 040012AC:{remote_port} {state} 00000000:00000000 00:00000000 00000000 10001 0 2 1"
    )


@pytest.mark.parametrize(
    ("rows", "open_count"),
    [
        ([LISTEN_8000], 0),  # idle
        ([LISTEN_8000, line("1F40", "D3C2", "01")], 1),  # one request being served or queued
        ([LISTEN_8000, line("1F40", "D3C2", "03"), line("1F40", "D3C4", "01")], 2),  # SYN_RECV counts too
        ([LISTEN_8000, line("1F40", "D3C2", "08")], 1),  # the client closed; the answer is still owed
        ([LISTEN_8000, line("1F40", "D3C2", "06"), line("1F40", "D3C6", "07")], 0),  # TIME_WAIT, CLOSE: done
        ([LISTEN_8000, line("D3C2", "1538", "01")], 0),  # its own connection to the database (5432) is not a request
        ([line("1F40", "D3C2", "01")], 0),  # nothing listens on 8000 (any more): not a request it will answer
        (
            [
                LISTEN6_8000,
                "   1: 0000000000000000FFFF0000030012AC:1F40 0000000000000000FFFF0000040012AC:D3C2 01 00000000:00000000 00:00000000 00000000 10001 0 2 1",
            ],
            1,
        ),
        ([], 0),
    ],
)
def test_open_requests_counts_connections_on_the_ports_it_listens_on(rows, open_count, monkeypatch):
    table = "\n".join([HEADER, *rows])
    answers = {"inspect": (0, "0\n"), "exec": (0, table + "\n")}
    monkeypatch.setattr(drain.ct, "docker_out", lambda env, *args: answers[args[0]])
    assert str(drain.open_requests(ENV, "c1")) == str(open_count)


def test_a_container_whose_table_cannot_be_read_is_not_waited_for(monkeypatch, capsys):
    answers = {"inspect": (0, "0\n"), "exec": (1, "")}
    monkeypatch.setattr(drain.ct, "docker_out", lambda env, *args: answers[args[0]])
    drain.wait_idle(ENV, ["c1"], "old")
    print("waited: no")
    assert capsys.readouterr().out.strip() == "waited: no"
