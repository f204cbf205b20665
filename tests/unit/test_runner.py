"""The runner's host handling, without a network: parallel work, results, exit codes."""

import threading
import time

import paramiko
import pytest
from invoke.exceptions import Exit

from pushdeploy import hostkeys, remote
from pushdeploy.settings import Access, ConfigError, Host
from pushdeploy.tasks.common import done

HOSTS = (Host("deploy", "10.0.0.1"), Host("deploy", "10.0.0.2", 2222), Host("deploy", "10.0.0.3"))


def test_hosts_run_at_once_and_results_keep_host_order(capsys):
    running, peak = set(), []
    lock = threading.Lock()

    def work(host, out):
        with lock:
            running.add(host)
            peak.append(len(running))
        time.sleep(0.2)
        out.write(f"step one\nstep two on {host.hostname}\n")
        out.flush()
        with lock:
            running.discard(host)
        return 0 if host.port == 22 else 1

    results = remote.on_hosts(HOSTS, work, label=lambda h: f"staging {h}")
    assert max(peak) == 3
    assert [r.host for r in results] == list(HOSTS)
    assert [r.exit_code for r in results] == [0, 1, 0]
    out = capsys.readouterr().out
    assert "staging 10.0.0.2:2222 | step two on 10.0.0.2" in out.splitlines()


def test_an_unreachable_host_is_reported_not_raised(capsys):
    def work(host, out):
        raise remote.RemoteError("cannot connect: refused")

    (result,) = remote.on_hosts(HOSTS[:1], work)
    assert result.exit_code == 255 and "refused" in result.message
    assert "error: cannot connect" in capsys.readouterr().out


@pytest.mark.parametrize(("codes", "expected"), [([0, 0], None), ([0, 75], 75), ([1, 0], 1), ([255], 255), ([-1], 1)])
def test_exit_code_is_zero_only_if_every_host_succeeded(codes, expected):
    results = [remote.HostResult(HOSTS[i], code, 1.0) for i, code in enumerate(codes)]
    if expected is None:
        done(results, "deploy")
    else:
        with pytest.raises(Exit) as error:
            done(results, "deploy")
        assert error.value.code == expected


@pytest.fixture(scope="module")
def keys():
    return paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)


def test_pinned_keys_come_from_the_value_and_the_file(tmp_path, keys):
    first, second = keys
    known = tmp_path / "known_hosts"
    known.write_text(f"[a.example]:2222 {first.get_name()} {first.get_base64()}\n")
    access = Access(known_hosts=f"b.example {second.get_name()} {second.get_base64()}", known_hosts_file=str(known))
    pinned = hostkeys.load(access)
    assert pinned.lookup("[a.example]:2222")[first.get_name()] == first
    assert pinned.lookup("b.example")[second.get_name()] == second
    client = paramiko.SSHClient()
    hostkeys.pin(client, pinned)
    assert isinstance(client._policy, paramiko.RejectPolicy)
    assert client.get_host_keys().lookup("b.example") is not None


def test_a_bad_known_hosts_value_names_the_variable():
    with pytest.raises(ConfigError) as error:
        hostkeys.load(Access(known_hosts="this is not a key line", known_hosts_file="/nonexistent"))
    assert error.value.key in ("DEPLOY_KNOWN_HOSTS", "DEPLOY_KNOWN_HOSTS_FILE")


def test_messages_say_what_to_do(keys):
    first, second = keys
    host = Host("deploy", "a.example", 2222)
    changed = hostkeys.changed_key_message(host, first, second)
    assert (
        "HAS CHANGED" in changed and hostkeys.fingerprint(first) in changed and hostkeys.fingerprint(second) in changed
    )
    assert "inv server.trust" in hostkeys.unknown_host_message(host, Access())
    assert hostkeys.known_hosts_line(host, first).startswith("[a.example]:2222 ssh-rsa ")


def test_work_on_several_hosts_starts_only_when_every_host_and_jump_host_is_pinned(tmp_path, keys):
    """A fleet where one host sits behind a bastion that was never pinned: server.setup and
    secrets.push refuse before connecting anywhere, naming the bastion first."""
    key = keys[0]
    bastion = Host("jump", "10.0.0.9")
    direct, behind = Host("deploy", "10.0.1.1"), Host("deploy", "10.0.1.2", via=(bastion,))
    lines = [f"{h} {key.get_name()} {key.get_base64()}" for h in ("10.0.1.1", "10.0.1.2")]
    (tmp_path / "known_hosts").write_text("")
    access = Access(known_hosts="\n".join(lines), known_hosts_file=str(tmp_path / "known_hosts"))
    assert hostkeys.unpinned([direct, behind], hostkeys.load(access)) == [bastion]
    problem = hostkeys.pinning_problem([direct, behind], access)
    assert "host key of 10.0.0.9 is not pinned" in problem and problem.endswith("Nothing was changed on any host.")
    assert "inv server.trust" in problem
    other = Host("deploy", "10.0.1.3", 2222, via=(bastion,))
    assert hostkeys.unpinned([behind, other, direct], hostkeys.load(access)) == [bastion, other]  # each once, in order
    assert "Not pinned either: [10.0.1.3]:2222." in hostkeys.pinning_problem([behind, other], access)
    pinned_too = Access(
        known_hosts="\n".join([*lines, f"10.0.0.9 {key.get_name()} {key.get_base64()}"]),
        known_hosts_file=str(tmp_path / "known_hosts"),
    )
    assert hostkeys.pinning_problem([direct, behind], pinned_too) == ""


def test_grouped_writers_print_each_hosts_answer_as_one_block(capsys):
    from pushdeploy.output import HostWriter

    a, b = HostWriter("staging h1", grouped=True), HostWriter("staging h2", grouped=True)
    a.write("version: 1.0.0\n")
    b.write("version: 1.1.0\nservices:\n")
    a.write("services:\n")
    assert capsys.readouterr().out == ""
    b.release()
    a.release()
    assert capsys.readouterr().out.splitlines() == [
        "staging h2 | version: 1.1.0",
        "staging h2 | services:",
        "staging h1 | version: 1.0.0",
        "staging h1 | services:",
    ]
