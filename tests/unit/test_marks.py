"""Rollback targets and bad releases (issue 18, parts 3 and 4): the history says what
served and what was marked; a rollback goes back along what served, a deploy of a release
marked bad is refused, the pull agent skips it, history and status show the mark."""

from __future__ import annotations

import json
import time

import pytest

from pushdeploy import history as history_table
from pushdeploy import preview, protocol, requests
from tests.unit.test_server_runs import ask, worker  # noqa: F401  (the fixture)

from pdserver import facts
from pdserver.request import Refused, parse


def tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("history_tool", protocol.SERVER_DIR / "lib/history.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def served(*runs):
    """History records from ("deploy"|"rollback"|"failed"|"mark-bad"|"mark-good"|"undo", VERSION)."""
    records = []
    for kind, version in runs:
        if kind.startswith("mark-"):
            records.append({"kind": "mark", "version": version, "mark": kind[5:], "by": "alice", "reason": "r"})
        elif kind == "undo":
            records.append({"kind": "rollback", "version": version, "outcome": "ok", "keep_good": "yes"})
        elif kind == "failed":
            records.append({"kind": "deploy", "version": version, "outcome": "failed"})
        else:
            records.append({"kind": kind, "version": version, "outcome": "ok", "by": "bob", "time": "t"})
    return records


@pytest.mark.parametrize(
    ("runs", "current", "target"),
    [
        # The case: 1.0.1 was rolled back, so a rollback from 1.0.2 returns to 1.0.0.
        (
            [("deploy", "1.0.0"), ("deploy", "1.0.1"), ("rollback", "1.0.0"), ("deploy", "1.0.2")],
            "1.0.2",
            "1.0.0",
        ),
        # A second rollback goes further back along what served, past the one it undid.
        ([("deploy", "A"), ("deploy", "B"), ("deploy", "C"), ("rollback", "B")], "B", "A"),
        ([("deploy", "A"), ("deploy", "B"), ("deploy", "C"), ("rollback", "B"), ("rollback", "A")], "A", ""),
        # Marked bad by hand: passed over; marked good again: back in.
        ([("deploy", "A"), ("deploy", "B"), ("mark-bad", "B"), ("deploy", "C")], "C", "A"),
        ([("deploy", "A"), ("deploy", "B"), ("mark-bad", "B"), ("mark-good", "B"), ("deploy", "C")], "C", "B"),
        # A rollback that was told to keep the release good (the undo of a fleet batch) marks nothing.
        ([("deploy", "A"), ("deploy", "B"), ("undo", "A")], "A", "B"),
        # A failed deploy never served, a failed rollback undid nothing.
        ([("deploy", "A"), ("failed", "B"), ("deploy", "C")], "C", "A"),
        # A redeploy of the same version: back to what served before it.
        ([("deploy", "A"), ("deploy", "B"), ("deploy", "B")], "B", "A"),
        ([("deploy", "A")], "A", ""),
    ],
)
def test_a_rollback_goes_back_along_what_served_past_bad_releases(runs, current, target):
    assert tool().rollback_choice(served(*runs), current)[0] == target


def test_the_choice_says_why_and_what_it_passed_over():
    history = tool()
    version, why = history.rollback_choice(
        served(("deploy", "A"), ("deploy", "B"), ("deploy", "C"), ("rollback", "B")), "B"
    )
    assert (version, why) == (
        "A",
        "A served before B took over; passed over C (marked bad by bob at t: rolled back to B)",
    )
    assert history.rollback_choice(served(("deploy", "A"), ("deploy", "B"), ("rollback", "A")), "A") == (
        "",
        "every release that served before it is marked bad or not deployable: B",
    )


def write_history(worker_dir, *runs):
    (worker_dir.parent / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in served(*runs)))


def test_a_deploy_of_a_bad_release_is_refused_unless_forced(worker, capsys):  # noqa: F811
    write_history(worker, ("deploy", "1.3.0"), ("deploy", "1.4.0"))
    assert ask(capsys, "mark staging 1.3.5 bad --reason=broken+images --by=alice")[0] == 0
    record = json.loads((worker.parent / "history.jsonl").read_text().splitlines()[-1])
    assert (record["kind"], record["version"], record["mark"], record["by"], record["reason"]) == (
        "mark",
        "1.3.5",
        "bad",
        "alice",
        "broken images",
    )
    with pytest.raises(Refused) as refused:
        ask(capsys, "deploy staging 1.3.5 --id=m1")
    assert refused.value.code == facts.EXIT_OLDER == 65
    assert "1.3.5 is marked bad by alice at" in str(refused.value) and ": broken images" in str(refused.value)
    assert "mark-good" in str(refused.value) and "--force" in str(refused.value)
    assert ask(capsys, "deploy staging 1.3.5 --id=m2 --force")[0] == 0
    assert ask(capsys, "mark staging 1.3.5 good --by=alice")[0] == 0
    assert ask(capsys, "deploy staging 1.3.5 --id=m3")[0] == 0


def test_a_rollback_says_why_in_its_log_and_keep_good_is_recorded(worker, capsys):  # noqa: F811
    write_history(worker, ("deploy", "1.0.0"), ("deploy", "1.4.0"), ("deploy", "1.5.0"), ("rollback", "1.4.0"))
    assert ask(capsys, "rollback staging --id=b1")[0] == 0  # the test server's .env: 1.4.0 serves
    request = (worker / "b1.request").read_text()
    assert request.startswith("KIND=rollback\nVERSION=1.0.0\n")
    assert "WHY=1.0.0 served before 1.4.0 took over; passed over 1.5.0 (marked bad by bob" in request
    assert ask(capsys, "rollback staging --id=b2 --keep-good --to=1.0.0")[0] == 0
    assert "KEEP_GOOD=1\n" in (worker / "b2.request").read_text()


def test_history_and_status_show_the_mark(worker, capsys):  # noqa: F811
    write_history(worker, ("deploy", "1.3.0"), ("deploy", "1.4.0"))
    ask(capsys, "mark staging 1.4.0 bad --reason=500s+on+checkout --by=alice")
    code, out = ask(capsys, "history staging")
    records = [json.loads(line) for line in out.splitlines()]
    assert "bad" not in records[0]
    assert records[1]["bad"].startswith("marked bad by alice at ") and records[1]["bad"].endswith(": 500s on checkout")
    table = history_table.table(records).splitlines()
    assert table[0].split()[-1] == "mark"
    assert "BAD: marked bad by alice" in table[2] and "marked bad" in table[3] and "500s on checkout" in table[3]
    code, out = ask(capsys, "status staging")
    assert "marked bad: 1.4.0 (SERVING NOW: inv deploy.rollback goes back): marked bad by alice" in out
    assert "last deploy: t deploy of 1.4.0 (was None): ok, by bob" in out  # the last run, not the mark


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("mark staging 1.0.0 ugly", "usage: mark ENV VERSION bad|good"),
        ("mark staging 1.0.0", "usage: mark"),
        ("mark staging x@y bad", "invalid argument"),
        ("plan staging", "usage: plan"),
    ],
)
def test_bad_mark_and_plan_requests_are_refused(line, problem):
    with pytest.raises(Refused, match=problem):
        parse(line.split(), time.time())


def test_a_rollback_plan_needs_no_version():
    request = parse("plan staging --rollback --expect=x".split(), time.time())
    assert request.words == () and request.option("rollback") is True


def test_the_client_sends_a_reason_the_server_reads_back():
    line = requests.mark("production", "1.4.0", bad=True, by="ci:alice", expect="h", reason="  500s on  checkout ")
    assert line == "mark production 1.4.0 bad --reason=500s+on+checkout --by=ci:alice --expect=h"
    from pdserver import marks

    assert marks.reason_of(parse(line.split(), time.time()).option("reason")) == "500s on checkout"
    for reason in ("rm -rf; x", "a" * 151, "-leading dash", 'quote"'):
        with pytest.raises(protocol.InvalidRequest, match="--reason"):
            requests.mark("production", "1.4.0", bad=True, by="me", expect="h", reason=reason)
    assert requests.plan("production", "", expect="h", rollback=True) == "plan production --rollback --expect=h"


def test_plan_verdicts_for_a_bad_release_and_a_rollback():
    bad = preview.parse(
        ["current=1.3.0", "target=1.4.0", "marked=bad: marked bad by alice at t: r", "order=refused: 1.4.0 is marked"]
    )
    assert preview.verdict(bad) == (65, "would be refused: the release is marked bad")
    assert any(line.startswith("mark:        1.4.0 is marked bad by alice") for line in preview.show(bad))
    back = preview.parse(["current=1.4.0", "target=1.3.0", "rollback=1.3.0 served before 1.4.0 took over", "order=ok"])
    assert preview.verdict(back) == (0, "would go back to 1.3.0 (now 1.4.0)")
    assert "rollback:    1.3.0 served before 1.4.0 took over" in preview.show(back)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({}, ""),
        ({"version": "1.2.0"}, "the version kept ready is 1.2.0, not 1.3.0"),
        ({"for": "1.3.9"}, "it was kept for 1.3.9, which no longer serves"),
        ({"since": -700}, "it was kept for warm_rollback (600s), and that has passed"),
        ({"migrations": "notes.0002_tags"}, "1.4.0 applied migrations (notes.0002_tags)"),
        ({"state": "running"}, "its containers are gone or running"),
        ({"gone": True}, "its containers are gone"),
        ({"mode": "running", "state": "running"}, ""),  # warm_rollback_keep: running
        ({"mode": "running", "state": "exited"}, "its containers are stopped"),
        ({"mode": "running", "state": "running", "health": "unhealthy"}, "its containers fail their health check"),
        ({"image": 1}, "the image 127.0.0.1:5000/pixel:1.3.0 is no longer tagged here"),
        ({"maintenance": True}, "--maintenance"),
    ],
)
def test_a_rollback_is_instant_only_to_exactly_the_version_kept_ready(server, monkeypatch, capsys, change, why):
    from pdserver import containers as ct
    from pdserver import env as envs
    from pdserver import pipeline, slots, warm

    env = envs.load("staging")  # 1.4.0 serves
    kept = {
        "version": "1.3.0",
        "for": "1.4.0",
        "slot": "blue",
        "containers": ["c1"],
        "migrations": "",
        "mode": "stopped",
    }
    kept.update({k: v for k, v in change.items() if k in kept})
    kept["since"] = time.time() + change.get("since", -5)
    envs.write_text(warm.path(env), json.dumps(kept) + "\n")

    def docker_out(env, *args):
        if args[:2] == ("image", "inspect"):
            return change.get("image", 0), "sha256:x"
        if change.get("gone"):
            return 1, ""
        return 0, f"{change.get('state', 'exited')} {change.get('health', '-')} 127.0.0.1:5000/pixel:1.3.0\n"

    monkeypatch.setattr(ct, "docker_out", docker_out)
    request = {"KIND": "rollback", "VERSION": "1.3.0", "MAINTENANCE": "1" if change.get("maintenance") else "0"}
    strategy = slots.Slots(env)
    steps = strategy.warm_steps(pipeline.Run(env, "r", request))
    out = capsys.readouterr().out
    if why:
        assert steps is None and f"full rollback: {why}" in out
    else:
        assert [name for name, _ in steps] == ["wake", "health", "admit", "switch"]
        assert strategy.finish_steps == ["retire"]
        how = "running idle for 5s" if change.get("mode") == "running" else "stopped 5s ago"
        assert f"instant rollback: 1.3.0 is kept ready ({how}, no migration since)" in out


def test_warm_rollback_0_keeps_nothing(server, monkeypatch):
    from pdserver import env as envs
    from pdserver import pipeline, slots

    env = envs.load("staging")
    env.values["WARM_ROLLBACK"] = "0"
    assert slots.Slots(env).warm_steps(pipeline.Run(env, "r", {"KIND": "rollback", "VERSION": "1.3.0"})) is None


def test_the_migrations_a_deploy_applied_come_from_its_log():
    from pdserver import release

    log = "==> migrate\n--- migrations to apply: notes.0002_tags notes.0003_x\n--- manage.py migrate\n"
    assert release.applied_migrations(log) == "notes.0002_tags notes.0003_x"
    assert release.applied_migrations("--- migrations to apply: none\n") == ""
    assert release.applied_migrations("no such line") == ""


def test_a_rollback_passes_over_a_version_the_environment_no_longer_deploys():
    """A version pinned by the pull agent, once the environment is back in push mode."""
    records = served(("deploy", "A"), ("deploy", "chan-0123456789ab"), ("deploy", "B"))
    version, why = tool().rollback_choice(records, "B", usable=lambda v: not v.startswith("chan-"))
    assert version == "A"
    assert (
        why == "A served before B took over; passed over chan-0123456789ab (not a version this environment deploys now)"
    )


def migrated(kind, version, applied="", unapplied=""):
    record = {"kind": kind, "version": version, "outcome": "ok"}
    record.update({k: v for k, v in (("migrations", applied), ("unapplied", unapplied)) if v})
    return record


@pytest.mark.parametrize(
    ("records", "target", "pending"),
    [
        # 1.1 added a column, 1.2 a table: back to 1.0, both go, in the order they came.
        (
            [
                migrated("deploy", "1.0", "notes.0001_initial"),
                migrated("deploy", "1.1", "notes.0002_tags"),
                migrated("deploy", "1.2", "notes.0003_x shop.0001_initial"),
            ],
            "1.0",
            ["notes.0002_tags", "notes.0003_x", "shop.0001_initial"],
        ),
        # A rollback that already unapplied some: only the rest.
        (
            [
                migrated("deploy", "1.0"),
                migrated("deploy", "1.1", "notes.0002_tags"),
                migrated("deploy", "1.2", "notes.0003_x"),
                migrated("rollback", "1.1", unapplied="notes.0003_x"),
            ],
            "1.0",
            ["notes.0002_tags"],
        ),
        # The target's own migrations are its schema; a failed deploy applied nothing.
        ([migrated("deploy", "1.0", "notes.0001_initial"), migrated("deploy", "1.1")], "1.0", []),
        (
            [migrated("deploy", "1.0"), {"kind": "deploy", "version": "1.1", "outcome": "failed", "migrations": "a.1"}],
            "1.0",
            [],
        ),
        # Never served here: nothing is known of its schema.
        ([migrated("deploy", "1.1", "notes.0002_tags")], "0.9", None),
    ],
)
def test_a_rollback_unapplies_what_was_applied_since_its_target_served(records, target, pending):
    assert tool().to_unapply(records, target) == pending


def test_a_rollback_plan_lists_the_migrations_and_refuses_an_irreversible_one():
    ok = preview.parse(
        ["current=1.1", "target=1.0", "rollback=1.0 served before 1.1 took over", "order=ok", "unapply=notes.0002_tags"]
        + ["unapply_check=ok"]
    )
    assert preview.verdict(ok) == (0, "would go back to 1.0 (now 1.1)")
    assert "migrations:  unapplied first: notes.0002_tags" in preview.show(ok)
    stuck = preview.parse(
        ["current=1.1", "target=1.0", "rollback=r", "order=ok", "unapply=notes.0002_tags", "unapply_check=irreversible"]
    )
    assert preview.verdict(stuck) == (65, "would be refused: a migration to unapply has no reverse")


def test_brief_reads_what_was_appended_since_and_leaves_out_steps_and_log(tmp_path):
    """The marks, the rollback's choice and the status read the history on every request:
    brief() keeps what it read (without steps and log tail) and parses only new lines."""
    history = tool()
    path = tmp_path / "history.jsonl"
    lines = [
        {"kind": "deploy", "version": "A", "outcome": "ok", "steps": [{"name": "pull"}], "log_tail": "x" * 500},
        {"kind": "deploy", "version": "B", "outcome": "ok", "steps": [], "log_tail": ""},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert history.brief(str(path)) == [{"kind": "deploy", "version": v, "outcome": "ok"} for v in "AB"]
    assert not (tmp_path / "history.jsonl.brief").exists(), "a reader writes nothing"
    assert history.brief(str(path), keep=True) == history.brief(str(path))  # what append() does
    with open(path, "a") as stream:
        stream.write(json.dumps({"kind": "rollback", "version": "A", "outcome": "ok"}) + '\n{"kind": "dep')
    read = history.brief(str(path), keep=True)  # the half-written line waits for its end
    assert [r["version"] for r in read] == ["A", "B", "A"]
    assert history.rollback_choice(read, "A")[0] == "" and "B" in history.bad(read)
    with open(path, "a") as stream:
        stream.write('loy", "version": "C", "outcome": "ok"}\n')
    assert [r["version"] for r in history.brief(str(path), keep=True)] == ["A", "B", "A", "C"]
    cached = json.loads((tmp_path / "history.jsonl.brief").read_text())
    assert cached["offset"] == path.stat().st_size and "log_tail" not in json.dumps(cached)
    path.write_text(json.dumps({"kind": "deploy", "version": "Z", "outcome": "ok"}) + "\n")  # rewritten by hand
    assert [r["version"] for r in history.brief(str(path))] == ["Z"]
    history.append(str(path), ["kind=deploy", "version=Y", "outcome=ok"])
    assert [r["version"] for r in history.brief(str(path))] == ["Z", "Y"]
    assert json.loads((tmp_path / "history.jsonl.brief").read_text())["offset"] == path.stat().st_size
    assert history.brief(str(tmp_path / "none.jsonl")) == []
