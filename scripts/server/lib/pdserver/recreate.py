"""The recreate switch (`switch: recreate`), for layouts the slots cannot serve, such as
gunicorn on a unix socket that the proxy reads from a shared volume (two versions
cannot run side by side). It costs a short restart, which the deploy measures:
  recreate  writes VERSION= to .env and recreates web and the proxy on the new version:
            compose stops the old containers, then creates and starts the new ones (the
            other `services`, a broker, are recreated only if their own config changed);
  up        waits until the new web works: healthy, if it has a Docker health check;
            else running without a restart for SETTLE seconds and answering a
            request through the proxy;
  not-serving (a figure in the history, not a step): from the first old container's
            stop signal to the new web being up, as seen here (an upper bound).
If the new version does not come up, undo puts the old one back the same way.
"""

from __future__ import annotations

import subprocess
import tempfile
import time

from . import compose, release, tls
from . import containers as ct
from . import env as envs
from . import run as runner

SETTLE = 3  # seconds a web container without a health check must keep running

# Asks for / through the proxy from inside the web container (a Django image has
# Python; the proxy's may have nothing but nginx and sh). Any answer below 500 means
# the proxy reached the app; a 5xx (502: no socket yet) or no answer means not yet.
PROXY_PROBE_PY = """
import sys, urllib.error, urllib.request
class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None
try:
    import ssl
    unchecked = urllib.request.HTTPSHandler(context=ssl._create_unverified_context())
    status = urllib.request.build_opener(Stay, unchecked).open(sys.argv[1], timeout=3).status
except urllib.error.HTTPError as error:
    status = error.code
except Exception:
    sys.exit(1)
sys.exit(0 if status < 500 else 1)
"""


class Recreate(ct.ComposeEngine):
    def __init__(self, env: envs.Env):
        super().__init__(env)
        self.recreating = False
        self.stops = None  # (docker events process, its output file)
        self.up_at, self.up_how = None, ""
        self.probe_url = self.probe_python = ""
        self.switch_steps = self.with_roles([("recreate", self.recreate), ("up", self.up)])
        self.finish_steps = ["prune-static"] + self.role_finish_steps() + self.tls_finish_steps()

    def services(self) -> list:
        return self.env["SERVICES"].split()

    def up_on(self, version: str) -> int:
        """web and the proxy recreated on VERSION (they restart together: the socket volume);
        the other services (a broker, a cache) only created if missing or recreated if their
        own configuration changed, as compose decides: a Redis queue survives the deploy."""
        env = self.env
        pair = [s for s in self.services() if s in (env["WEB_SERVICE"], env["PROXY_SERVICE"])]
        others = [s for s in self.services() if s not in pair]
        up = compose.compose(env, "up", "-d", "--no-deps", "--force-recreate", *pair, version=version)
        if pair and runner.streamed(up) != 0:
            return 1
        return runner.streamed(compose.compose(env, "up", "-d", "--no-deps", *others, version=version)) if others else 0

    def recreate(self, run) -> int:
        env = self.env
        self.watch_stops(self.containers())
        self.recreating = True
        if not envs.write_version(env, run.version):
            print(f"could not write {env.app_dir}/.env", flush=True)
            return 1
        print(f"VERSION={run.version} in {env.app_dir}/.env; recreating {' '.join(self.services())}", flush=True)
        return self.up_on(run.version)

    def up(self, run) -> int:
        """The new web containers work: from here on the new version serves."""
        if not self.wait_web_up():
            return 1
        run.switched = True
        self.report_not_serving(run, f"the new {self.env['WEB_SERVICE']} being up")
        self.stop_watching()
        return 0

    def finish(self, run) -> None:
        from .pipeline import step

        web = ct.service_containers(self.env, self.env["WEB_SERVICE"])
        pruning = release.prune_static(run, web[0] if web else "")
        step(run, "prune-static", lambda run: release.prune_static_report(run, pruning))
        self.finish_roles(run)
        self.finish_tls(run)

    def undo(self, run) -> int:
        """The old version back the way the new one came: .env, a recreate, the same wait."""
        env = self.env
        if run.switched:
            print("the new version already serves: nothing to roll back", flush=True)
            return 0
        self.roles.undo(run)
        if not self.recreating:
            print(f"{env.name} still serves {run.previous}: nothing was recreated", flush=True)
            return 0
        if not envs.write_version(env, run.previous):
            print(f"could not write {env.app_dir}/.env", flush=True)
            return 1
        print(f"VERSION={run.previous} in {env.app_dir}/.env again", flush=True)
        services = self.services()
        if run.previous == "none":
            if runner.streamed(compose.compose(env, "rm", "-s", "-f", *services)) != 0:
                return 1
            print("nothing was deployed before: removed the new containers", flush=True)
            self.stop_watching()
            return 0
        print(f"recreating {' '.join(services)} on {run.previous}", flush=True)
        self.probe_url = ""
        if self.up_on(run.previous) == 0 and self.wait_web_up():
            self.report_not_serving(run, f"{run.previous} being up again")
            self.stop_watching()
            print(f"{env.name} serves {run.previous} again", flush=True)
            return 0
        self.stop_watching()
        print(f"{run.previous} did not come up again either: see `inv deploy.status --env {env.name}`", flush=True)
        return 1

    # ------------------------------------------------------------------ waiting

    def containers(self) -> list:
        """Every container of the configured services."""
        ids = set()
        for service in self.services():
            ids.update(runner.output(compose.compose(self.env, "ps", "-q", service), stderr=False)[1].split())
        return sorted(ids)

    def wait_web_up(self) -> bool:
        env = self.env
        ids = ct.service_containers(env, env["WEB_SERVICE"])
        if not ids:
            print(f"compose left no {env['WEB_SERVICE']} container", flush=True)
            return False
        return all(self.wait_container_up(container) for container in ids)

    def wait_container_up(self, container: str) -> bool:
        """It must keep running (no exit, no restart by its restart policy) until it passes
        its health check, or, without one, for SETTLE seconds and until it answers through
        the proxy (when that can be asked)."""
        env = self.env
        timeout = int(env["HEALTH_TIMEOUT"])
        deadline = time.monotonic() + timeout
        test = ct.health_test(env, container)
        first = run_marks(env, container)
        self.up_at, since = None, None
        while True:
            now = run_marks(env, container)
            if not now.startswith("running "):
                ct.show_failure(env, container, f"{now.split(' ')[0] or 'gone'}: it exited")
                return False
            if now != first or now.rsplit(" ", 1)[1] != "0":
                ct.show_failure(env, container, "running again, but it exited and its restart policy restarted it")
                return False
            since = since or time.time()
            if test:
                current = ct.state(env, container)
                if current == "unhealthy":
                    ct.show_failure(env, container, "unhealthy")
                    return False
                if current == "healthy" or ct.probe(env, container, test):
                    self.up_at, self.up_how = time.time(), "its health check passed"
                    print(f"{container[:12]} is healthy", flush=True)
                    return True
            elif self.up_at is None:
                answered = self.proxy_answers(container)
                if answered == 0:
                    self.up_at, self.up_how = time.time(), f"a request through {env['PROXY_SERVICE']} was answered"
                elif answered == 2:
                    self.up_at = since
                    self.up_how = "its container ran; nothing could ask it a request, so the figure may be short"
            if self.up_at is not None and time.time() - since >= SETTLE:
                print(f"{container[:12]} is up ({self.up_how}) and kept running for {SETTLE}s", flush=True)
                return True
            if time.monotonic() >= deadline:
                if test:
                    ct.show_failure(env, container, f"still failing its health check after {timeout}s")
                else:
                    ct.show_failure(
                        env,
                        container,
                        f"running, but no request through {env['PROXY_SERVICE']} was answered within {timeout}s",
                    )
                return False
            # While it is not up yet, the probe itself paces the loop: up is noticed sooner.
            time.sleep(0.25 if self.up_at is not None else 0.05)

    def proxy_answers(self, container: str) -> int:
        """0 answered, 1 not yet, 2 cannot ask (no proxy, no shared network, no Python)."""
        env = self.env
        if not self.probe_url:
            self.probe_url, why = proxy_url(env, container)
            if not self.probe_url:
                print(why, flush=True)
                self.probe_url = "none"
            else:
                print(f"probing {self.probe_url} (through {env['PROXY_SERVICE']}) from {container[:12]}", flush=True)
        if self.probe_url == "none" or self.probe_python == "none":
            return 2
        for python in [self.probe_python] if self.probe_python else ["python3", "python"]:
            command = compose.docker(env, "exec", container, python, "-c", PROXY_PROBE_PY, self.probe_url)
            rc = runner.output(command, timeout=10)[0]
            if rc in (0, 1):
                self.probe_python = python
                return rc
            if rc not in (126, 127):  # 126/127: no such interpreter in the image; else: not yet
                return 1
        print(
            f"no python3 or python in the {env['WEB_SERVICE']} image: cannot ask it a request through {env['PROXY_SERVICE']}",
            flush=True,
        )
        self.probe_python = "none"
        return 2

    # ------------------------------------------------------------------ not serving

    def watch_stops(self, ids: list) -> None:
        """Record when each replaced container got its stop signal (Docker's own clock), in
        the background: compose stops them somewhere inside `up`."""
        if not ids:
            return
        filters = [word for container in ids for word in ("--filter", f"container={container}")]
        out = tempfile.TemporaryFile()
        argv = ["events", "--since", f"{time.time():.6f}", "--filter", "type=container"]
        argv += ["--filter", "event=kill", "--filter", "event=die", *filters, "--format", "{{.TimeNano}}"]
        # Bounded, so a deploy killed with -9 leaves no watcher behind for long.
        limit = str(2 * int(self.env["HEALTH_TIMEOUT"]) + 300)
        command = compose.docker(self.env, *argv)
        proc = subprocess.Popen(
            ["timeout", limit, *command.argv], stdout=out, stderr=subprocess.DEVNULL, env=runner.environ(command)
        )
        self.stops = (proc, out)

    def report_not_serving(self, run, what: str) -> None:
        if self.stops is None or self.up_at is None:
            return
        proc, out = self.stops
        out.seek(0)
        stamps = [int(word) for word in out.read().split() if word.isdigit()]
        if not stamps:
            print("no stop of the old containers was seen: no not-serving figure", flush=True)
            return
        gap = max(self.up_at - min(stamps) / 1e9, 0)
        print(f" not serving for {gap:.1f}s: from the old containers' stop to {what} ({self.up_how})", flush=True)
        with open(run.file("steps"), "a") as steps:
            steps.write(f"not-serving\t{gap:.1f}\t1\n")

    def stop_watching(self) -> None:
        if self.stops is not None:
            proc, out = self.stops
            proc.kill()
            proc.wait()
            out.close()
        self.stops = None


def run_marks(env: envs.Env, container: str) -> str:
    """What changes when a container exits or is restarted: 'STATUS STARTED RESTARTS'."""
    rc, out = ct.docker_out(env, "inspect", "-f", "{{.State.Status}} {{.State.StartedAt}} {{.RestartCount}}", container)
    return out.strip() if rc == 0 else ""


def proxy_url(env: envs.Env, web: str) -> tuple[str, str]:
    """(http://PROXY-IP:PORT/ on the first network the proxy shares with WEB, '') or ('', why
    not). PORT is the proxy's first exposed TCP port (80 if none)."""
    proxy_service = env["PROXY_SERVICE"]
    if not proxy_service:
        return "", "no proxy_service configured: no request through it"
    ids = runner.output(compose.compose(env, "ps", "-q", proxy_service), stderr=False)[1].split()
    if not ids:
        return "", f"no {proxy_service} container: no request through it"
    networks = "{{range $net, $cfg := .NetworkSettings.Networks}}"
    web_networks = ct.docker_out(env, "inspect", "-f", networks + "{{$net}} {{end}}", web)[1].split()
    exposed = ct.docker_out(
        env, "inspect", "-f", "{{range $port, $_ := .Config.ExposedPorts}}{{$port}} {{end}}", ids[0]
    )[1]
    ports = sorted(int(port[:-4]) for port in exposed.split() if port.endswith("/tcp") and port[:-4].isdigit())
    listing = ct.docker_out(env, "inspect", "-f", networks + '{{$net}} {{$cfg.IPAddress}}{{"\\n"}}{{end}}', ids[0])[1]
    for line in listing.splitlines():
        network, _, address = line.partition(" ")
        if address and network in web_networks:
            if tls.serving(env):  # plain HTTP only redirects: ask over HTTPS (the path, not the certificate)
                return f"https://{address}:443/", ""
            return f"http://{address}:{ports[0] if ports else 80}/", ""
    return "", f"{proxy_service} and {env['WEB_SERVICE']} share no network: no request through it"
