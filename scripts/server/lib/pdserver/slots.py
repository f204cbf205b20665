"""The zero-downtime switch (`switch: slots`, the default).

The proxy routes to one of two DNS names, WEB-blue or WEB-green (the slots),
choosing per request by a flag file (APP_DIR/routing/green). A deploy:
  start    creates the new web containers beside the old ones, named only in the
           idle slot: nothing routes to them yet;
  health   runs their own health check until it passes;
  admit    gives them the service name too (for anything else that calls it);
  switch   flips the flag: from the next request on, the proxy asks for the new
           slot's name. The old containers keep their name and address, so a
           request already on its way to them is answered;
  retire   after DRAIN_SECONDS (requests that read the flag before the flip reach
           the old containers) and once they have answered every connection they
           were sent, stops them gracefully: each finishes what it serves, then exits.
No proxy ever holds the address of a container that is gone: the old slot's name is
not asked for any more when its containers stop, and the new slot's name is asked
for only when every cached answer for it has expired (DNS_VALID after the slot last
served, see flip_to).
"""

from __future__ import annotations

import os
import time

from . import compose, drain, facts, release, tls, warm
from . import containers as ct
from . import env as envs
from . import run as runner


def slot_alias(env: envs.Env, slot: str) -> str:
    return f"{env['WEB_SERVICE']}-{slot}"


def routing_flag(env: envs.Env) -> str:
    return os.path.join(env.app_dir, facts.ROUTING_DIR, facts.SLOTS[1])


def live_slot(env: envs.Env) -> str:
    return facts.SLOTS[1] if os.path.exists(routing_flag(env)) else facts.SLOTS[0]


def other_slot(slot: str) -> str:
    return facts.SLOTS[1] if slot == facts.SLOTS[0] else facts.SLOTS[0]


class Slots(ct.ComposeEngine):
    def __init__(self, env: envs.Env):
        super().__init__(env)
        self.old, self.new = [], []
        self.live = self.idle = ""
        self.admitted = self.flipped = False
        self.woke, self.kept = False, {}  # an instant rollback's kept containers (warm.py)
        self.cpu_before = {}
        self.finish_steps = ["retire", "prune-static"]
        self.switch_steps = self.with_roles(
            [("start", self.start), ("health", self.health), ("admit", self.admit), ("switch", self.switch)]
        )
        self.finish_steps += self.role_finish_steps() + self.tls_finish_steps()

    # ------------------------------------------------------------------ the steps

    def status(self) -> dict:
        env = self.env
        live = f"{env['WEB_SERVICE']}-{live_slot(env)}"
        print(f"live slot: {live}")
        found = {"live_slot": live}
        line, kept = warm.describe(env, warm.read(env))
        if line:
            print(line)
        found.update(kept)
        return {**found, **super().status()}

    def start(self, run) -> int:
        """New containers beside the old (compose --scale with --no-recreate leaves the
        old as they are), named only in the idle slot until they proved healthy.
        Running containers already in the idle slot were left by a run that died
        mid-deploy: the proxy never routed to them, so they go first, gracefully."""
        env, web = self.env, self.env["WEB_SERVICE"]
        warm.remove(env)
        every = ct.service_containers(env, web, stopped=True)
        self.old = ct.service_containers(env, web)
        stopped = [c for c in every if c not in self.old]
        if stopped:
            if runner.output(compose.docker(env, "rm", "-f", *stopped))[0] != 0:
                return 1
            print(f"removed {len(stopped)} stopped {web} container(s)", flush=True)
        self.live = live_slot(env)
        self.idle = other_slot(self.live)
        leftover = self.in_slot(self.idle, self.old)
        if leftover:
            print(
                f"{len(leftover)} {web} container(s) left by a deploy that did not finish are still in "
                f"{slot_alias(env, self.idle)}, which the proxy does not route to: removing them",
                flush=True,
            )
            if drain.retire(self.env, leftover, "leftover") != 0:
                return 1
            self.old = [c for c in self.old if c not in leftover]
        envs.write_text(os.path.join(env.state_dir, f"slot-{self.idle}"), run.version + "\n")
        count = len(self.old)
        scale = f"{web}={2 * count if count else 1}"
        up = compose.compose(
            env, "up", "--no-start", "--no-deps", "--no-recreate", "--scale", scale, web, version=run.version
        )
        if runner.streamed(up) != 0:
            return 1
        self.new = [c for c in ct.service_containers(env, web, stopped=True) if c not in self.old]
        if not self.new:
            print(f"compose created no new {web} container", flush=True)
            return 1
        self.yield_cpu(self.new)
        for container in self.new:
            if not self.set_aliases(container, [slot_alias(env, self.idle)]):
                return 1
            if runner.output(compose.docker(env, "start", container))[0] != 0:
                return 1
        print(
            f"started {len(self.new)} new {web} container(s) as {slot_alias(env, self.idle)} beside {count} old "
            f"({slot_alias(env, self.live)})",
            flush=True,
        )
        return 0

    def health(self, run) -> int:
        """The web service must prove it works: a container without a health check fails.
        Its own check runs now, again and again, instead of at Docker's next interval."""
        env = self.env
        timeout = int(env["HEALTH_TIMEOUT"])
        deadline = time.monotonic() + timeout
        for container in self.new:
            test = ct.health_test(env, container)
            if not test:
                print(
                    f"{container[:12]} has no Docker health check: give the service one (healthcheck: in the compose "
                    "file) so a deploy can tell the new version works",
                    flush=True,
                )
                return 1
            while True:
                now = ct.state(env, container)
                if now in ("unhealthy", "exited", "dead", ""):
                    ct.show_failure(env, container, now)
                    return 1
                if now == "healthy" or ct.probe(env, container, test):
                    break
                if time.monotonic() >= deadline:
                    ct.show_failure(env, container, f"still failing its health check after {timeout}s")
                    return 1
                time.sleep(0.2)
            print(f"{container[:12]} is healthy", flush=True)
        return 0

    def admit(self, run) -> int:
        """Healthy new containers get the service name as well (other services may call it)."""
        env = self.env
        self.admitted = True
        if not self.restore_cpu(self.new):
            return 1
        for container in self.new:
            if not self.set_aliases(container, [slot_alias(env, self.idle), env["WEB_SERVICE"]]):
                return 1
        print(f"{slot_alias(env, self.idle)} answers as {env['WEB_SERVICE']} too", flush=True)
        return 0

    def switch(self, run) -> int:
        """.env gets the new version, the proxy moves to the new slot, and the other services
        (the proxy) are created if missing: from here on the new version serves."""
        env = self.env
        if not envs.write_version(env, run.version):
            print(f"could not write {env.app_dir}/.env", flush=True)
            return 1
        print(f"VERSION={run.version} in {env.app_dir}/.env", flush=True)
        if not self.flip_to(self.idle):
            return 1
        self.flipped = True
        if not up_other_services(env):
            return 1
        run.switched = True
        if not ct.reload_proxy_if_changed(env):
            print(
                f"warning: {env['PROXY_SERVICE']} did not reload its new configuration: check `nginx -t` in it",
                flush=True,
            )
        return 0

    def finish(self, run) -> None:
        """Prune old static files in a new container while the old ones drain (not after an
        instant rollback: the files of the version it brought back were never pruned)."""
        from .pipeline import step

        if self.woke:
            step(run, "retire", lambda run: self.retire_old(run))
            self.finish_roles(run)
            self.finish_tls(run)
            return
        pruning = release.prune_static(run, self.new[0] if self.new else "")
        step(run, "retire", lambda run: self.retire_old(run))
        step(run, "prune-static", lambda run: release.prune_static_report(run, pruning))
        self.finish_roles(run)
        self.finish_tls(run)

    def retire_old(self, run=None) -> int:
        """The old containers drain and stop; after a deploy (RUN) they are kept, out of the
        service's name, for WARM_ROLLBACK seconds (warm.py)."""
        env = self.env
        keep = run is not None and run.kind == "deploy" and int(env["WARM_ROLLBACK"]) > 0 and bool(self.old)
        keep = keep and run.previous != run.version  # a restart: no rollback ever goes back to the same version
        drain.retire(env, self.old, "old", keep=keep)
        if keep:
            slot = other_slot(live_slot(env))  # where they served: the proxy has moved on

            def rename(container: str) -> bool:
                return self.set_aliases(container, [slot_alias(env, slot)])

            if not warm.keep(env, run, slot, self.old, rename):
                print("could not keep the old containers ready: a rollback will be a full one", flush=True)
                runner.output(compose.docker(env, "stop", *self.old))
                runner.output(compose.docker(env, "rm", "-f", *self.old))
        self.old = []
        return 0

    # ------------------------------------------------------------------ instant rollback

    def warm_steps(self, run):
        """The steps of an instant rollback, or None (with why) for a full one: the previous
        version's containers are kept (retire_old) and this rollback goes back to exactly
        them, in time, with no migration of the version it undoes between them."""
        env = self.env
        kept = warm.read(env)
        why = ""
        if int(env["WARM_ROLLBACK"]) <= 0:
            return None
        if run.restore:
            why = "--restore-db"
        elif run.maintenance:
            why = "--maintenance"
        elif not kept:
            why = "no previous version kept ready"
        elif kept.get("version") != run.version:
            why = f"the version kept ready is {kept.get('version')}, not {run.version}"
        elif kept.get("for") != envs.current_version(env):
            why = f"it was kept for {kept.get('for')}, which no longer serves"
        elif warm.left(env, kept) < 0:
            why = f"it was kept for warm_rollback ({env['WARM_ROLLBACK']}s), and that has passed"
        elif kept.get("migrations"):
            why = f"{kept.get('for')} applied migrations ({kept['migrations']})"
        else:
            why = warm.why_not(env, kept)
        if why:
            print(f"full rollback: {why}", flush=True)
            return None
        self.kept = kept
        self.finish_steps = ["retire"] + self.role_finish_steps() + self.tls_finish_steps()
        age = time.time() - float(kept["since"])
        how = f"running idle for {age:.0f}s" if warm.running(kept) else f"stopped {age:.0f}s ago"
        print(f"instant rollback: {run.version} is kept ready ({how}, no migration since)", flush=True)
        return [("wake", self.wake)] + self.switch_steps[1:]

    def wake(self, run) -> int:
        """The kept containers, in their slot (the idle one) beside the version being undone,
        which serves until the switch, start again (or, kept running, get their CPU weight back)."""
        env, web, kept = self.env, self.env["WEB_SERVICE"], self.kept
        self.live = live_slot(env)
        self.idle = other_slot(self.live)
        if kept["slot"] != self.idle:
            print(f"the kept containers are in {slot_alias(env, kept['slot'])}, which serves now", flush=True)
            return 1
        self.new = list(kept["containers"])
        self.cpu_before.update(kept.get("shares", {}))  # admit gives each its own weight, as it had
        self.old = [c for c in ct.service_containers(env, web) if c not in self.new]
        self.woke = True
        warm.forget(env)
        envs.write_text(os.path.join(env.state_dir, f"slot-{self.idle}"), run.version + "\n")
        if not warm.wake(env, kept):
            return 1
        age = time.time() - float(kept["since"])
        how = "woke" if warm.running(kept) else "started"
        print(
            f"{how} {len(self.new)} kept {web} container(s) of {run.version} again as {slot_alias(env, self.idle)} "
            f"(kept {age:.0f}s) beside {len(self.old)} of {kept['for']}",
            flush=True,
        )
        return 0

    def undo(self, run) -> int:
        """Undo a switch that did not complete, in the order of a retirement: the proxy
        back to the old slot first, then the new containers drain and stop gracefully,
        and .env names the old version again."""
        env = self.env
        if run.switched:
            print("the new version already serves: nothing to roll back", flush=True)
            return 0
        if self.flipped:
            if not self.flip_to(self.live, back=True):
                print(f"warning: could not move the proxy back to {slot_alias(env, self.live)}", flush=True)
            self.flipped = False
        self.roles.undo(run)
        if self.new:
            if self.admitted:
                drain.retire(self.env, self.new, "new")
            else:  # never reachable: no drain needed
                runner.output(compose.docker(env, "rm", "-f", *self.new))
                print(f"removed the new {env['WEB_SERVICE']} container(s)", flush=True)
            self.new = []
        if envs.current_version(env) != run.previous:
            if envs.write_version(env, run.previous):
                print(f"VERSION={run.previous} in {env.app_dir}/.env again", flush=True)
        print(f"{env.name} still serves {run.previous}", flush=True)
        return 0

    def interrupted(self, run) -> None:
        """A stopped run: finish retiring the old version if the new one serves, else undo."""
        if run.switched:
            self.retire_old(run)
            self.roles.retire(run)
        else:
            self.undo(run)

    # ------------------------------------------------------------------ routing

    def flip_to(self, slot: str, back: bool = False) -> bool:
        """Point the proxy at SLOT: an atomic create or remove of the flag file, which the
        proxy checks on every request. Moving to a slot whose name the proxy may still have
        cached from its previous containers first waits out DNS_VALID."""
        env = self.env
        folder = os.path.join(env.app_dir, facts.ROUTING_DIR)
        flipped_at = os.path.join(env.state_dir, "flipped-at")
        try:
            os.makedirs(folder, mode=0o755, exist_ok=True)
            os.chmod(folder, 0o755)
            if not back:
                last = float(envs.read_text(flipped_at) or 0)
                wait = last + int(env["DNS_VALID"]) + 0.2 - time.time()
                if wait > 0:
                    print(
                        f"waiting {wait:.2f}s for the proxy's cached answers for {slot_alias(env, slot)} to expire",
                        flush=True,
                    )
                    time.sleep(wait)
            if slot == facts.SLOTS[1]:
                tmp = os.path.join(folder, ".flag.tmp")
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
                os.chmod(tmp, 0o644)
                os.replace(tmp, routing_flag(env))
            elif os.path.exists(routing_flag(env)):
                os.unlink(routing_flag(env))
            envs.write_text(flipped_at, f"{time.time()}\n")
        except OSError as error:
            print(f"could not move the proxy to {slot_alias(env, slot)}: {error}", flush=True)
            return False
        print(f"the proxy now routes to {slot_alias(env, slot)}", flush=True)
        return True

    def set_aliases(self, container: str, aliases: list) -> bool:
        """Reconnect CONTAINER to each of its networks with exactly these pushdeploy names
        (the service name, the slots) and its other aliases as they were."""
        env = self.env
        ours = {env["WEB_SERVICE"], *(slot_alias(env, slot) for slot in facts.SLOTS), container[:12]}
        rc, out = ct.docker_out(
            env,
            "inspect",
            "-f",
            '{{range $net, $cfg := .NetworkSettings.Networks}}{{$net}} {{$cfg.Aliases}}{{"\\n"}}{{end}}',
            container,
        )
        if rc != 0:
            return False
        for line in out.splitlines():
            network, _, listed = line.partition(" ")
            if not network:
                continue
            keep = [alias for alias in listed.strip("[]").split() if alias not in ours]
            options = [word for alias in keep + aliases for word in ("--alias", alias)]
            if runner.output(compose.docker(env, "network", "disconnect", network, container))[0] != 0:
                return False
            if runner.output(compose.docker(env, "network", "connect", *options, network, container))[0] != 0:
                return False
        return True

    def in_slot(self, slot: str, ids: list) -> list:
        """The web containers of IDS named in SLOT (its alias on any network)."""
        if not ids:
            return []
        alias = slot_alias(self.env, slot)
        _, out = ct.docker_out(
            self.env,
            "inspect",
            "-f",
            "{{.Id}}{{range .NetworkSettings.Networks}}{{range .Aliases}} {{.}}{{end}}{{end}}",
            *ids,
        )
        return [words[0] for words in map(str.split, out.splitlines()) if words and alias in words[1:]]

    def env_names_live_slot(self) -> bool:
        """After a run died mid-deploy, .env names what the live slot runs: the run may have
        written the new version and died before the proxy moved to it."""
        env = self.env
        live = live_slot(env)
        version = envs.read_text(os.path.join(env.state_dir, f"slot-{live}"))
        if not version or version == envs.current_version(env):
            return True
        if not self.in_slot(live, ct.service_containers(env, env["WEB_SERVICE"])):
            return True
        if not envs.write_version(env, version):
            return False
        print(f"VERSION={version} in {env.app_dir}/.env again: the version {slot_alias(env, live)} serves", flush=True)
        return True

    # ------------------------------------------------------------------ CPU weight

    def yield_cpu(self, ids: list) -> None:
        """Containers created but not serving yet get a low CPU weight; their own is kept."""
        env = self.env
        if env["PRIORITY"] != "low" or not ids:
            return
        _, out = ct.docker_out(env, "inspect", "-f", "{{.Id}} {{.HostConfig.CpuShares}}", *ids)
        for line in out.splitlines():
            container, _, shares = line.partition(" ")
            self.cpu_before[container] = int(shares or 0)
        if ct.docker_out(env, "update", "--cpu-shares", str(ct.LOW_CPU_SHARES), *ids)[0] != 0:
            print(
                "note: could not lower the new containers' CPU weight (docker update --cpu-shares): they start at full weight",
                flush=True,
            )

    def restore_cpu(self, ids: list) -> bool:
        """Containers about to serve get their own CPU weight back (0 is Docker's default, 1024)."""
        env = self.env
        if env["PRIORITY"] != "low":
            return True
        for container in ids:
            shares = self.cpu_before.get(container, 0)
            if runner.output(compose.docker(env, "update", "--cpu-shares", str(shares or 1024), container))[0] != 0:
                print(f"could not give {container[:12]} its CPU weight back (docker update --cpu-shares)", flush=True)
                return False
        return True


def up_other_services(env: envs.Env) -> bool:
    """Services other than web (the proxy) are created if missing and recreated only if
    their configuration changed (compose decides), never for a new web version; when nothing
    about them changed since the last deploy, compose is not even asked."""
    others = [service for service in env["SERVICES"].split() if service != env["WEB_SERVICE"]]
    if not others:
        return True
    applied = os.path.join(env.state_dir, "services-config")
    wanted = " ".join(filter(None, [env["APP_FILES_SHA256"], tls.compose_digest(env)]))
    if os.path.isfile(applied) and envs.read_text(applied).strip() == wanted and all_running(env, others):
        return True
    if runner.streamed(compose.compose(env, "up", "-d", "--no-deps", *others)) != 0:
        return False
    envs.write_text(applied, wanted + "\n")
    return True


def all_running(env: envs.Env, services: list) -> bool:
    for service in services:
        ids = ct.service_containers(env, service)
        if not ids or ct.docker_out(env, "inspect", "-f", "{{.State.Running}}", ids[0])[1].strip() != "true":
            return False
    return True
