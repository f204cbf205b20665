"""The deploy lock (pdserver/lock.py): a contender names the run that holds it,
and the moment a run takes or gives the lock back (lock.info empty) is waited out, not
reported as an unknown holder. Real flock, real files; no server needed."""

import contextlib
import os
import subprocess
import sys
import time

from pushdeploy import protocol

TAKE = """
import os, sys
sys.path.insert(0, os.path.join(os.environ["PD_ROOT"], "scripts/server/lib"))
from pdserver.lock import Lock
holder = Lock(os.environ["STATE_DIR"]).take()
print("took it" if holder is None else "busy: " + holder.split(" ", 1)[-1])
"""


@contextlib.contextmanager
def held(state_dir, info: str, seconds: float, clear_after: float | None = None):
    """The lock held as a worker holds it: lock.info written, optionally cleared (a
    finishing run), the lock kept until `seconds` have passed or the block ends."""
    script = f"""
exec 9>>"$STATE_DIR/lock"; flock -n 9 || exit 9
printf '%s\\n' {info!r} >"$STATE_DIR/lock.info"
echo held
{"" if clear_after is None else f'sleep {clear_after}; : >"$STATE_DIR/lock.info"'}
sleep {seconds}
"""
    proc = subprocess.Popen(
        ["bash", "-c", script], env={**os.environ, "STATE_DIR": str(state_dir)}, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.kill()
        proc.wait()


def take(state_dir) -> tuple[str, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", TAKE],
        env={**os.environ, "PD_ROOT": str(protocol.PROJECT_ROOT), "STATE_DIR": str(state_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), time.monotonic() - started


def test_a_free_lock_is_taken(tmp_path):
    assert take(tmp_path)[0] == "took it"


def test_a_running_deploy_is_named(tmp_path):
    with held(tmp_path, "20261202T1-1 deploy of 1.4.0 by ci in progress since 2026-12-02T10:00:00Z", 30):
        said, _ = take(tmp_path)
    assert said == "busy: deploy of 1.4.0 by ci in progress since 2026-12-02T10:00:00Z"


def test_a_run_that_is_finishing_hands_the_lock_over(tmp_path):
    # The worker has cleared lock.info and exits a moment later (pruning old runs).
    with held(tmp_path, "", 0.5):
        said, _ = take(tmp_path)
    assert said == "took it"


def test_a_holder_that_never_names_itself_is_reported_after_a_few_seconds(tmp_path):
    with held(tmp_path, "", 30):
        said, seconds = take(tmp_path)
    assert said == "busy: another run (starting or finishing)"
    assert seconds < 20


def test_a_contender_that_reads_the_info_as_it_is_cleared_still_waits(tmp_path):
    with held(tmp_path, "x deploy of 1 by a in progress since 2026-12-02T10:00:00Z", 0.5, clear_after=0.0):
        time.sleep(0.05)
        said, _ = take(tmp_path)
    assert said == "took it"


# ------------------------------------------------------------------ probing (status, plan)

PROBE = """
import os, sys
sys.path.insert(0, os.path.join(os.environ["PD_ROOT"], "scripts/server/lib"))
from pdserver.lock import Lock
for _ in range(int(os.environ.get("PROBES", "1"))):
    holder = Lock(os.environ["STATE_DIR"]).busy()
    print("free" if holder is None else "busy: " + holder.split(" ", 1)[-1], flush=True)
"""


def probe(state_dir, probes: int = 1) -> subprocess.Popen:
    env = {**os.environ, "PD_ROOT": str(protocol.PROJECT_ROOT), "STATE_DIR": str(state_dir), "PROBES": str(probes)}
    return subprocess.Popen(
        [sys.executable, "-c", PROBE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def answers(proc: subprocess.Popen) -> list[str]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out.split("\n")[:-1]


def test_probes_at_the_same_moment_never_see_each_other_as_a_run(tmp_path):
    # A pre-flight reaching one server under two names, or two people asking for status:
    # an exclusive probe made one of them report "another run (starting or finishing)".
    procs = [probe(tmp_path, probes=150) for _ in range(6)]
    said = [line for proc in procs for line in answers(proc)]
    assert len(said) == 900
    assert set(said) == {"free"}


def test_a_probe_names_the_running_deploy_and_leaves_the_lock_alone(tmp_path):
    with held(tmp_path, "20261202T1-1 deploy of 1.4.0 by ci in progress since 2026-12-02T10:00:00Z", 30):
        assert answers(probe(tmp_path)) == ["busy: deploy of 1.4.0 by ci in progress since 2026-12-02T10:00:00Z"]
    assert take(tmp_path)[0] == "took it"


def test_a_probe_waits_out_a_run_that_is_finishing(tmp_path):
    with held(tmp_path, "", 0.5):
        assert answers(probe(tmp_path)) == ["free"]


def test_a_probe_reports_a_holder_that_never_names_itself(tmp_path):
    with held(tmp_path, "", 30):
        assert answers(probe(tmp_path)) == ["busy: another run (starting or finishing)"]


def test_a_deploy_takes_the_lock_while_probes_run(tmp_path):
    procs = [probe(tmp_path, probes=150) for _ in range(3)]
    took = [take(tmp_path)[0] for _ in range(5)]
    for proc in procs:
        answers(proc)
    assert took == ["took it"] * 5
