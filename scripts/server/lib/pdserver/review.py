"""Review environments: throwaway instances of a review template (an environment whose
conf says REVIEW_TEMPLATE=yes), one per pull request. `review-up review-12 TAG` makes,
from the template `review`:
  APP_DIR-12        the template's files, and a .env from the template's own (secrets
                    come from the server, never from the client)
  PROJECT-12        its own compose project: its own containers, database volume
  STATE/review-12   its state and history (review.created marks it live)
  a route           pr-12.DOMAIN on the shared front proxy (one nginx container per
                    template, on 127.0.0.1:REVIEW_PORT, network pushdeploy-TEMPLATE)
then deploys TAG there with the ordinary deploy (pipeline.py), in this process.
`review-down` removes all of it; a failed or stopped first `review-up` does too, so
nothing is left half made.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

from . import compose, facts, front, pipeline, plan, refresh, worker
from . import containers as ct
from . import env as envs
from . import run as runner
from .lock import Lock, now_iso
from .request import Refused, Request
from .result import Result
from .status import last_deploy
from .verbs import review_instances, review_template, review_url

CREATED = "review.created"


class Review:
    """The template and one instance of it (TEMPLATE-N)."""

    def __init__(self, template: envs.Env, name: str):
        self.template, self.name = template, name
        self.number = name.rsplit("-", 1)[1]
        values = dict(  # an instance serves plain HTTP to the front proxy, which serves the template's tls:
            template.values,
            APP_DIR=f"{template.app_dir}-{self.number}",
            PROJECT=f"{template['PROJECT']}-{self.number}",
            TLS="off",
            WARM_ROLLBACK="0",  # nothing rolls an instance back: keep no old containers running
        )
        self.env = envs.Env(name, template.conf_path, values)
        self.network = f"pushdeploy-{template.name}"
        self.front = f"pushdeploy-{template.name}-front"
        self.front_dir = os.path.join(template.state_dir, "front")

    @property
    def host(self) -> str:
        return f"pr-{self.number}.{self.template['REVIEW_DOMAIN']}"

    @property
    def created(self) -> bool:
        return os.path.isfile(os.path.join(self.env.state_dir, CREATED))

    def docker(self, *args: str) -> tuple[int, str]:
        return runner.output(compose.docker(self.env, *args))


def review_lock(template: envs.Env) -> int:
    """Everything that changes instances runs under one lock per template: the cap counts,
    and the front proxy's routes change, one request at a time."""
    os.makedirs(template.state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(template.state_dir, "review.lock"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    deadline = time.monotonic() + 300
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Refused(
                    f"another review-up or review-down of {template.name} runs; try again later", facts.EXIT_BUSY
                ) from None
            time.sleep(0.1)


# ---------------------------------------------------------------------- making and removing


def write_instance_env(review: Review) -> None:
    """The instance's .env: the template's (its secrets), with this instance's names."""
    lines = [
        f"# review environment {review.name}, from the template {review.template.name}'s .env (bin/deploy review-up)"
    ]
    for line in envs.read_text(os.path.join(review.template.app_dir, ".env")).splitlines():
        if not line.startswith(("VERSION=", "REVIEW_NAME=", "REVIEW_NETWORK=", "REVIEW_HOST=")):
            lines.append(line)
    lines += [
        "VERSION=none",
        f"REVIEW_NAME={review.name}",
        f"REVIEW_NETWORK={review.network}",
        f"REVIEW_HOST={review.host}",
    ]
    path = os.path.join(review.env.app_dir, ".env")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write("\n".join(lines) + "\n")


def create(review: Review, run) -> bool:
    template, env = review.template, review.env
    if not os.path.isfile(os.path.join(template.app_dir, ".env")):
        print(
            f"the template has no {template.app_dir}/.env: give it a server_env file and run `inv server.setup --env {template.name}`",
            flush=True,
        )
        return False
    os.makedirs(env.runs_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(env.state_dir, CREATED), "w") as marker:
        marker.write(now_iso() + "\n")
    os.makedirs(env.app_dir, mode=0o755, exist_ok=True)
    os.chmod(env.app_dir, 0o755)
    copy = 'tar -C "$1" --exclude=./.env --exclude=./maintenance --exclude=./routing -cf - . | tar -C "$2" -xf -'
    if subprocess.run(["sh", "-c", copy, "copy", template.app_dir, env.app_dir], check=False).returncode != 0:
        return False
    write_instance_env(review)
    if not front.ensure_network(review):
        return False
    print(
        f"made {review.name} in {env.app_dir} (compose project {env['PROJECT']}) from the template {template.name}",
        flush=True,
    )
    return seed(review, run)


def seed(review: Review, run) -> bool:
    """The database starts empty (migrations fill it), or from the newest backup of another
    environment on this host, scrubbed by the template's scrub step in the release the
    backup was taken of (the instance has none deployed yet)."""
    how = review.template["REVIEW_SEED"]
    if how in ("fresh", ""):
        print("database: fresh", flush=True)
        return True
    if not how.startswith("backup:"):
        print(f"REVIEW_SEED is fresh or backup:ENV, not '{how}'", flush=True)
        return False
    source = how[len("backup:") :]
    if not facts.matches(facts.ENV_RE, source):
        print(f"REVIEW_SEED: invalid environment '{source}'", flush=True)
        return False
    dump = refresh.latest_backup(os.path.join(facts.STATE, source, "backups"))
    step = pipeline.step
    return (
        step(run, "database", ct.ComposeEngine(review.env).database)
        and step(run, "seed", refresh.restore_file, dump)
        and step(run, "scrub", refresh.scrub, refresh.backup_version(dump))
    )


def destroy(review: Review) -> None:
    """Everything the instance made: containers, volumes, networks (by compose's labels,
    also what compose alone would miss), files, state, route."""
    env = review.env
    front.route_remove(review)
    if os.path.isfile(os.path.join(env.app_dir, ".env")):
        runner.output(compose.compose(env, "down", "--volumes", "--remove-orphans", "--timeout", "5"))
    ct.remove_labelled(env, volumes=True)
    subprocess.run(["rm", "-rf", env.app_dir, env.state_dir], check=False)
    front.front_remove_if_unused(review)


def unmake(review: Review) -> None:
    """A first review-up that does not finish removes what it made, however it ends.
    Unmarked first: whatever else fails, it no longer counts as live, and review-down
    (which looks for its files and containers) removes the rest."""
    print(f"removing what was made of {review.name}", flush=True)
    try:
        os.unlink(os.path.join(review.env.state_dir, CREATED))
    except FileNotFoundError:
        pass
    try:
        destroy(review)
    except Exception:  # noqa: BLE001
        print(f"warning: could not remove all of {review.name}: run `inv review.down --pr {review.number}`", flush=True)


# ---------------------------------------------------------------------- verbs


def _review(request: Request) -> Review:
    return Review(review_template(request), request.env)


def review_up(request: Request) -> Result:
    sys.stdout.reconfigure(line_buffering=True)
    review = _review(request)
    env, version = review.env, request.words[0]
    plan.check_version(env, version)
    review_lock(review.template)
    runner.stop_on(signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
    making = False
    try:
        if not review.created:
            live = len(review_instances(review.template.name))
            if live >= int(review.template["REVIEW_MAX"]):
                raise Refused(
                    f"{live} review environments of {review.template.name} are live, the most allowed (review_max: "
                    f"{review.template['REVIEW_MAX']}): take one down (`inv review.down --pr N`, `inv review.prune`) or raise review_max",
                    facts.EXIT_FULL,
                )
            making = True
        return _up(review, version, request, making)
    except runner.Stopped:
        runner.ignore_stops()
        print(f"review-up of {review.name} interrupted (signal)", flush=True)
        if making:
            unmake(review)
        return Result(1, {"error": "interrupted"})


def _up(review: Review, version: str, request: Request, making: bool) -> Result:
    env = review.env
    run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
    values = {"KIND": "deploy", "VERSION": version, "BY": request.option("by", ""), "URL": request.option("url", "")}
    run = pipeline.Run(env, run_id, values)
    run.setup_name = review.template.name
    if making:
        os.makedirs(env.runs_dir, mode=0o700, exist_ok=True)
        with pipeline.teed(run.file("log")):
            made = create(review, run)
        if not made:
            print(f"could not make {review.name}", flush=True)
            unmake(review)
            raise Refused(f"review-up of {review.name} failed: nothing was left behind", 1)
    lock = Lock(env.state_dir)
    holder = lock.take()
    if holder is not None:
        raise Refused(f"busy: {holder.split(' ', 1)[-1]}; try again when it is done", facts.EXIT_BUSY)
    try:
        lock.name(f"review-{os.getpid()}", f"review-up of {review.name} at {version}", run.by, now_iso())
        last = last_deploy(env.history)
        if not making and envs.current_version(env) == version and ": ok" in last:
            print(f"{review.name} already runs {version} (last deploy: {last})", flush=True)
            run_id = ""
        else:
            with pipeline.teed(run.file("log")):
                open(run.file("steps"), "a").close()
                rc = worker.execute(run, pipeline.strategy_for(env))
            if rc:
                lock.release()
                if making:
                    print(f"the first deploy of {review.name} failed", flush=True)
                    unmake(review)
                    raise Refused(f"review-up of {review.name} failed: nothing was left behind", 1)
                raise Refused(f"review-up of {review.name} failed; it still runs {envs.current_version(env)}", 1)
        if not front.route_add(review):
            if making:
                unmake(review)
            raise Refused(f"could not route {review.host} to {review.name}", 1)
    finally:
        if lock.fd >= 0:
            lock.release()
    runner.ignore_stops()
    url = review_url(review.template, review.number)
    print(f"url: {url}", flush=True)
    return Result(0, {"url": url, "version": version, "made": making, "run": run_id})


def review_down(request: Request) -> Result:
    review = _review(request)
    env = review.env
    review_lock(review.template)
    label = f"label=com.docker.compose.project={env['PROJECT']}"
    if (
        not os.path.isdir(env.state_dir)
        and not os.path.isdir(env.app_dir)
        and not review.docker("ps", "-aq", "--filter", label)[1].split()
    ):
        front.route_remove(review)
        front.front_remove_if_unused(review)
        print(f"{review.name} does not exist: nothing to remove", flush=True)
        return Result(0, {"removed": False})
    os.makedirs(env.state_dir, mode=0o700, exist_ok=True)
    lock = Lock(env.state_dir)
    if lock.take() is not None and not lock.take_within(120):
        raise Refused(
            f"busy: {(lock.holder() or '- another run').split(' ', 1)[-1]}; try again when it is done", facts.EXIT_BUSY
        )
    destroy(review)
    lock.close()
    print(f"removed {review.name}: containers, volumes, networks, files, state and route", flush=True)
    return Result(0, {"removed": True})
