"""`engine: swarm`. The environment's host is a swarm manager; the compose files are a
stack (`docker stack deploy -c`), named PROJECT. A deploy, in the pipeline's steps:
  preflight  this node is a manager; the stack file renders (`docker stack config`)
             and every service tagged with the version updates start-first, gated
             by a health check (lib/swarm.py problems)
  pull       the new image on the manager, and its digest (the nodes pull that digest
             through the registry: stack deploy pins it)
  backup     pg_dump of the web service's database server, from a one-off container
             of BACKUP_IMAGE on the stack's network
  migrate, hooks  in a one-off container of the new image on the stack's (attachable
             overlay) network, before any service changes
  proxy      the services outside the stack (MANAGER_COMPOSE_FILES) up on the manager
  deploy     `docker stack deploy` with VERSION set to the new version
  converge   every service watched until converged, failed or CONVERGE_TIMEOUT; then
             VERSION in .env
On any failure after `deploy`, the WHOLE stack goes back to the previous version (stack
deploy again with it, watched the same way): swarm's own rollback works service by
service and would leave the others on the new one.

lib/swarm.py reads Docker's JSON (pure, table-tested); this module asks Docker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time

from . import compose, stackfile, tls
from . import containers as ct
from . import env as envs
from . import run as runner
from .pipeline import Strategy
from .request import Refused


class Swarm(ct.TlsProxy, Strategy):
    def __init__(self, env: envs.Env):
        self.env = env
        self.where = f"swarm stack {env['PROJECT']}, "
        self.deployed = False  # stack deploy ran: undo redeploys the previous version
        self.since = 0.0
        self.report = []
        self.quiesced = {}  # worker role: the host names of the tasks told to take no more jobs
        self.switch_steps = [("proxy", self.proxy), ("deploy", self.deploy), ("converge", self.converge)]
        self.finish_steps = self.tls_finish_steps()

    def status(self) -> dict:
        from .status import swarm_status

        swarm_status(self.env)
        return {}

    def facts(self) -> dict:
        from .status import swarm_role

        return {"swarm": swarm_role(self.env)}

    def plan_migrations(self, version: str) -> list:
        return stackfile.plan_migrations(self.env, version)

    def setup_check(self) -> int:
        stack = stackfile.setup_check(self.env)  # a renewed certificate is served whatever the stack file says
        return self.setup_check_tls() or stack

    def finish(self, run) -> None:
        self.finish_tls(run)

    def teardown(self, volumes: bool) -> list:
        env = self.env
        label = f"label=com.docker.stack.namespace={env['PROJECT']}"
        code, out = runner.output(compose.docker(env, "stack", "rm", env["PROJECT"]))
        if code != 0:  # only a network still in use by a stopping task is no reason to stop
            services = ct.docker_out(env, "service", "ls", "-q", "--filter", label)
            if services[0] != 0 or services[1].split():
                raise Refused(
                    f"docker stack rm failed (is this node a manager?): {out.strip()[-300:]}; {env.name} stays", 1
                )
        if env["MANAGER_COMPOSE_FILES"] and os.path.isfile(os.path.join(env.app_dir, ".env")):
            runner.output(
                stackfile.manager_compose(env, "down", "--remove-orphans", *(("--volumes",) if volumes else ()))
            )
        # stack rm does not wait for the tasks: their networks go once the tasks have stopped.
        deadline = time.time() + 60
        networks = ct.docker_out(env, "network", "ls", "-q", "--filter", label)[1].split()
        while networks and time.time() < deadline:
            time.sleep(1)
            runner.output(compose.docker(env, "network", "rm", *networks))
            networks = ct.docker_out(env, "network", "ls", "-q", "--filter", label)[1].split()
        gone = [f"stack {env['PROJECT']} (its services; swarm stops their tasks on every node)"]
        if networks:
            gone.append(f"kept network(s) {' '.join(networks)}: still in use after 60 s (docker network rm them later)")
        if volumes:  # the stack's volumes on this node, once its tasks here have stopped
            deadline = time.time() + 60
            while ct.docker_out(env, "ps", "-aq", "--filter", label)[1].split() and time.time() < deadline:
                time.sleep(1)
            names = ct.docker_out(env, "volume", "ls", "-q", "--filter", label)[1].split()
            if names:
                runner.output(compose.docker(env, "volume", "rm", *names))
                gone.append(f"{len(names)} stack volume(s) on this node (other nodes keep theirs: remove them there)")
        return gone + ct.remove_labelled(env, volumes)

    def preflight(self, run) -> int:
        env = self.env
        found = stackfile.problems(env, run.version)
        if found:
            print(f"{env.name} cannot be deployed safely:", flush=True)
            for line in "\n".join(found).splitlines():
                print(f"  {line}", flush=True)
            return 1
        name = ct.docker_out(env, "info", "-f", "{{.Name}}")[1].strip()
        nodes = len(ct.docker_out(env, "node", "ls", "-q")[1].split())
        print(f"{name} is a manager of a swarm of {nodes} node(s); the stack file is ready", flush=True)
        return self.install_tls() if env["MANAGER_COMPOSE_FILES"] else 0

    def pull(self, run) -> int:
        env = self.env
        try:
            image = stackfile.release_settings(env, run.version, os.devnull)["image"]
        except (RuntimeError, KeyError) as error:
            print(error, flush=True)
            return 1
        print(f"pulling {image}", flush=True)
        if ct.pulled(env, compose.docker(env, "pull", "-q", image), image) != 0:
            return 1
        digests = ct.docker_out(env, "image", "inspect", "-f", '{{join .RepoDigests " "}}', image)[1].strip()
        print(f"digest {digests}", flush=True)
        return 0

    @contextlib.contextmanager
    def on_stack_network(self, run, name: str):
        """`docker run` options for a one-off container NAME on the stack's network, with the
        web service's environment (in a root-only file, gone afterwards), and the one-off's
        settings (image, network, mounts) at the new version; None, said why, if there are none."""
        env = self.env
        with tempfile.NamedTemporaryFile("w", prefix="pd-env-") as env_file:
            try:
                settings = stackfile.release_settings(env, run.version, env_file.name)
            except RuntimeError as error:
                print(error, flush=True)
                settings = None
            if settings is None or not self.ensure_network(settings["network"]):
                yield None
                return
            shares = ct.LOW_CPU_SHARES if env["PRIORITY"] == "low" else 0
            options = ["--rm", "--name", f"{env['PROJECT']}-{name}-{os.getpid()}", "--network", settings["network"]]
            yield options + ["--env-file", env_file.name, f"--cpu-shares={shares}"], settings

    def one_off(self, run, argv: list, environ: dict) -> int:
        """ARGV in a one-off container of the new image on the stack's network, on this node."""
        with self.on_stack_network(run, "release") as found:
            if found is None:
                return 1
            options, settings = found
            print(f"one-off container of {settings['image']} on {settings['network']}", flush=True)
            options += [word for key, value in environ.items() for word in ("-e", f"{key}={value}")]
            options += [word for mount in settings["mount"] for word in ("-v", mount)]
            return runner.streamed(compose.docker(self.env, "run", *options, settings["image"], *argv))

    def backup(self, run) -> int:
        """pg_dump of the database server the web service uses, from a one-off container of
        BACKUP_IMAGE on the stack's network (the server may be reachable only from there)."""
        env = self.env
        if not env["BACKUP_IMAGE"]:
            print("backup needs backup_image (an image with pg_dump) for engine: swarm", flush=True)
            return 1
        with self.on_stack_network(run, "backup") as found:
            if found is None:
                return 1
            options, settings = found
            print(f"pg_dump in a one-off container of {env['BACKUP_IMAGE']} on {settings['network']}", flush=True)
            command = compose.docker(env, "run", *options, env["BACKUP_IMAGE"], "sh", "-c", ct.BACKUP_SH)
            code = ct.backup_into(run, command)
        if code:
            print(
                f"pg_dump failed (exit {code}): nothing changed; check the database server and backup_image's pg_dump version",
                flush=True,
            )
        return code

    def restore(self, run, path: str) -> int:
        """A rollback's restore, from a one-off container of BACKUP_IMAGE on the stack's network."""
        from . import refresh

        env = self.env
        with self.on_stack_network(run, "restore") as found:
            if found is None:
                return 1
            options, settings = found
            print(f"pg_restore in a one-off container of {env['BACKUP_IMAGE']} on {settings['network']}", flush=True)
            command = compose.docker(
                env, "run", "-i", *options, env["BACKUP_IMAGE"], "sh", "-c", refresh.REPLACE_EXTERNAL_SH
            )
            return refresh.replace_with(run, path, command)

    def ensure_network(self, name: str) -> bool:
        """The stack's network must exist before the stack does (first deploy): made here as
        stack deploy would, labelled with the stack, so stack deploy adopts it."""
        env = self.env
        code, attachable = ct.docker_out(env, "network", "inspect", "-f", "{{.Attachable}}", name)
        if code == 0:
            if attachable.strip() == "true":
                return True
            print(
                f"network {name} is not attachable: declare it `attachable: true` in the stack file (the one-off "
                f"container joins it), then `docker stack rm {env['PROJECT']}` once to recreate it",
                flush=True,
            )
            return False
        label = f"com.docker.stack.namespace={env['PROJECT']}"
        if ct.docker_out(env, "network", "create", "-d", "overlay", "--attachable", "--label", label, name)[0]:
            return False
        print(f"created the stack's network {name} (overlay, attachable)", flush=True)
        return True

    def proxy(self, run) -> int:
        """Services outside the stack, with compose on this node: created if missing,
        recreated only if their configuration changed; the proxy reloads changed files."""
        env = self.env
        if not env["MANAGER_COMPOSE_FILES"]:
            print("no manager_compose_files: nothing outside the stack", flush=True)
            return 0
        if runner.streamed(stackfile.manager_compose(env, "up", "-d")) != 0:
            return 1
        envs.write_text(os.path.join(env.state_dir, "services-config"), tls.compose_digest(env) + "\n")
        return 0 if ct.reload_proxy_if_changed(env) else 1  # its files, or its certificate, changed

    def task_hostnames(self, service: str) -> list:
        """The host names (short container ids) of SERVICE's tasks that should run."""
        env = self.env
        ids = ct.docker_out(env, "service", "ps", "-q", "--filter", "desired-state=running", service)[1].split()
        if not ids:
            return []
        out = ct.docker_out(env, "inspect", "--type", "task", "-f", "{{.Status.ContainerStatus.ContainerID}}", *ids)[1]
        return sorted(container[:12] for container in out.split() if container)

    def quiesce(self, run) -> None:
        """Worker roles with a quiesce command take no more jobs before the stack deploy
        replaces their tasks (roles.py says why): one-off containers on the stack's network
        ask each running task in turn (%h is its host name), QUIET_WAIT apart, so that no two
        of them are told at once (roles.quiet says why). Only the tasks told are recorded
        (resume restarts those the update leaves)."""
        from . import roles

        env = self.env
        asked = {r: self.task_hostnames(f"{env['PROJECT']}_{r.name}") for r in roles.declared(env) if r.quiesce}
        asked = {role: names for role, names in asked.items() if names}
        if not asked:
            return
        with self.on_stack_network(run, "quiesce") as found:
            if found is None:
                print("warning: no one-off container to quiesce the workers with: they are stopped as they are")
                return
            options, settings = found
            for role, names in asked.items():
                told = []
                for name in names:
                    own = [
                        f"{word}-{name}" if before == "--name" else word
                        for before, word in zip([""] + options, options)
                    ]
                    command = compose.docker(
                        env, "run", *own, settings["image"], *roles.quiesce_argv(role.quiesce, [name])
                    )
                    code, out = runner.output(command, timeout=60)
                    for line in out.strip().splitlines()[-2:]:  # what it answered
                        print(f"  {line.strip()}", flush=True)
                    if code != 0:
                        print(f"warning: {role.name}: quiesce of {name} failed (exit {code})", flush=True)
                    else:
                        told.append(name)
                    time.sleep(roles.QUIET_WAIT)
                print(f"{role.name}: {len(told)} task(s) told to take no more jobs", flush=True)
                if told:
                    self.quiesced[role.name] = told

    def resume(self) -> None:
        """Quiesced tasks the update did not replace (it failed, or their image did not
        change) are replaced now: they would take no job ever again."""
        env = self.env
        for name, names in sorted(self.quiesced.items()):
            service = f"{env['PROJECT']}_{name}"
            left = set(self.task_hostnames(service)) & set(names)
            if left:
                runner.output(compose.docker(env, "service", "update", "--force", "--detach", service))
                print(f"{name}: {len(left)} quiesced task(s) were not replaced: restarting them", flush=True)
        self.quiesced = {}

    def deploy(self, run, version: str = "") -> int:
        env = self.env
        if not version:
            self.quiesce(run)
        version = version or run.version
        self.since = time.time()
        self.deployed = True
        print(f"docker stack deploy {env['PROJECT']} with VERSION={version}", flush=True)
        command = stackfile.with_dotenv(env, version, *stackfile.deploy_args(env))
        code, out = runner.output(command)
        for line in out.splitlines():  # newer CLIs say they do not wait; we do (watch)
            if line and "detach=false" not in line:
                print(line, flush=True)
        return code

    def converge(self, run) -> int:
        env = self.env
        if not self.watch("deploy"):
            return 1
        self.resume()
        run.switched = True
        if not envs.write_version(env, run.version):
            print(f"could not write {env.app_dir}/.env", flush=True)
            return 1
        print(f"every service converged; VERSION={run.version} in {env.app_dir}/.env", flush=True)
        return 0

    def snapshot(self) -> dict:
        """Docker's JSON for the watch: the stack's services, their tasks, the nodes."""
        env = self.env
        label = f"label=com.docker.stack.namespace={env['PROJECT']}"
        ids = ct.docker_out(env, "service", "ls", "-q", "--filter", label)[1].split()
        services, tasks = [], []
        if ids:
            services = _json_list(ct.docker_out(env, "service", "inspect", *ids)[1])
            task_ids = ct.docker_out(env, "service", "ps", "-q", *ids)[1].split()
            if task_ids:  # a task may go between ps and inspect: inspect still prints the others
                tasks = _json_list(ct.docker_out(env, "inspect", "--type", "task", *task_ids)[1])
        node_ids = ct.docker_out(env, "node", "ls", "-q")[1].split()
        nodes = _json_list(ct.docker_out(env, "node", "inspect", *node_ids)[1]) if node_ids else []
        return {"services": services, "tasks": tasks, "nodes": nodes}

    def watch(self, phase: str) -> bool:
        """Every service of the stack until all converged, one failed or CONVERGE_TIMEOUT
        passed. Prints each service's state whenever it changes."""
        env = self.env
        timeout = int(env["CONVERGE_TIMEOUT"])
        deadline = time.monotonic() + timeout
        last = []
        while True:
            try:
                report = stackfile.rules().watch(self.snapshot(), phase, self.since)
            except Exception:  # noqa: BLE001 (Docker's answer could not be read)
                report = ["updating\t?\tthe swarm's state could not be read (the manager is busy?)"]
            if report != last:
                for line in sorted(set(report) - set(last)):
                    state, name, detail = (line.split("\t") + ["", ""])[:3]
                    if state == "down":
                        print(
                            f"node {name} is DOWN (not answering the manager): its tasks are rescheduled elsewhere",
                            flush=True,
                        )
                    else:
                        print(f"  {state:<9} {name}: {detail}", flush=True)
                last = report
            failed = [line.split("\t")[1] for line in report if line.startswith("failed")]
            if failed:
                print(f"the update failed: {' '.join(failed)}", flush=True)
                return False
            updating = [line.split("\t") for line in report if line.startswith("updating")]
            if not updating:
                if not report:
                    print(f"the stack {env['PROJECT']} has no services", flush=True)
                    return False
                self.report = report
                return True
            if time.monotonic() >= deadline:
                waiting = ";".join(" ".join(fields[1:3]) for fields in updating)
                print(f"not converged after {timeout}s (converge_timeout): {waiting}", flush=True)
                return False
            time.sleep(1)

    def undo(self, run) -> int:
        """Back to the previous version, the whole stack at once; no worker left quiesced."""
        try:
            return self.stack_back(run)
        finally:
            self.resume()

    def stack_back(self, run) -> int:
        env = self.env
        if not self.deployed:
            print(f"no service was changed: {env.name} still runs {run.previous}", flush=True)
            return 0
        if run.previous == "none":
            print(
                f"nothing was deployed here before: the stack stays on {run.version} as swarm left it; deploy a version that works",
                flush=True,
            )
            return 1
        print(
            f"rolling the whole stack back to {run.previous} (every service, not only the one that failed)", flush=True
        )
        if self.deploy(run, run.previous) != 0:
            return 1
        if not self.pause_on_failure():
            print(
                "warning: could not set the services' update policy for the rollback (all at once, pause on failure)",
                flush=True,
            )
        if not self.watch("rollback"):
            return 1
        if envs.current_version(env) != run.previous and not envs.write_version(env, run.previous):
            return 1
        listing = ct.docker_out(env, "node", "ls", "--format", "{{.Hostname}} {{.Status}}")[1]
        down = " ".join(
            words[0] for words in map(str.split, listing.splitlines()) if len(words) > 1 and words[1] != "Ready"
        )
        if down:
            print(
                f"{env.name} runs {run.previous} again on every node that answers; down: {down} (a task still running "
                "there stops when its node answers the manager again)",
                flush=True,
            )
        else:
            print(f"{env.name} runs {run.previous} again on every node", flush=True)
        stragglers = [
            m.group(0)[2:]
            for line in self.report
            for m in re.finditer(r"; [0-9]* task\(s\) of [^;]* still running on [^;]*", line)
        ]
        if stragglers:
            print(f"swarm is still stopping tasks it replaced:{';'.join(stragglers)}", flush=True)
        return 0

    def pause_on_failure(self) -> bool:
        """The rollback's update policy, until the next deploy's stack file sets the file's
        again: all tasks at once (a node that stopped answering holds up only its own
        tasks); pause on failure (swarm's own rollback would take a service whose update
        fails later back to the version just undone)."""
        env = self.env
        label = f"label=com.docker.stack.namespace={env['PROJECT']}"
        for service in ct.docker_out(env, "service", "ls", "-q", "--filter", label)[1].split():
            update = (
                "service",
                "update",
                "--detach",
                "--quiet",
                "--update-parallelism",
                "0",
                "--update-failure-action",
                "pause",
            )
            if ct.docker_out(env, *update, service)[0] != 0:
                return False
        return True

    def describe_failure(self, run) -> None:
        print(f"the stack {self.env['PROJECT']} runs: {stack_versions(self.env)}", flush=True)


def stack_versions(env: envs.Env) -> str:
    """The versions the stack's services run now, e.g. "web=1.1.0"."""
    label = f"label=com.docker.stack.namespace={env['PROJECT']}"
    out = ct.docker_out(env, "service", "ls", "--filter", label, "--format", "{{.Name}}={{.Image}}")[1]
    found = []
    for line in out.splitlines():
        name, _, image = line.partition("=")
        name = name[len(env["PROJECT"]) + 1 :] if name.startswith(env["PROJECT"] + "_") else name
        image = re.sub(r"@sha256:[0-9a-f]+", "", image)
        found.append(f"{name}={image.rsplit(':', 1)[-1] if ':' in image else image}")
    return " ".join(found)


def _json_list(text: str) -> list:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []
