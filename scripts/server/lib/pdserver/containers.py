"""The compose engine's steps before the switch (preflight, pull, database, backup, the
one-off container) and the container facts both switches read, from the docker CLI.

A service's containers are found by the labels compose (v1 and v2) puts on them: the
docker CLI answers in a tenth of the time `compose ps` takes to read the files.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time

from . import acme, compose, order, tls
from . import env as envs
from . import run as runner
from .pipeline import Strategy
from .request import Refused

LOW_CPU_SHARES = 64  # the weight of what the deploy starts until it serves (PRIORITY=low)


def docker_out(env: envs.Env, *args: str) -> tuple[int, str]:
    return runner.output(compose.docker(env, *args), stderr=False)


def pulled(env: envs.Env, command, image: str) -> int:
    """Run a pull, its output shown; on failure, what went wrong and what to do (a registry
    that refuses us is named, with how to log in again)."""
    code, out = runner.output(command)
    for line in out.splitlines():
        print(line, flush=True)
    if code != 0:
        print(pull_failure(env, image, out), flush=True)
    return code


def pull_failure(env: envs.Env, image: str, out: str) -> str:
    said = out.strip().splitlines()[-1] if out.strip() else "no output"
    setup = f"`inv server.setup --env {os.path.basename(env.conf_path)[: -len('.conf')] or env.name}`"
    if compose.REGISTRY_REFUSED.search(out) and env["REGISTRY"]:
        return (
            f"could not pull {image}: the registry {env['REGISTRY']} refused the login of {env['REGISTRY_USER']} "
            f"({said}). Nothing was changed. If the password was rotated or expired, set the new one in "
            f"DEPLOY_REGISTRY_PASSWORD and run {setup} (it logs in again on every host)"
        )
    if compose.REGISTRY_REFUSED.search(out):
        return (
            f"could not pull {image}: its registry wants a login ({said}). Nothing was changed. Set registry: "
            f"(server, user) in invoke.yaml, the password in DEPLOY_REGISTRY_PASSWORD, and run {setup}"
        )
    return f"could not pull {image} ({said}): is it pushed, and does this host reach its registry? Nothing was changed"


def service_containers(env: envs.Env, service: str, stopped: bool = False) -> list:
    """The ids of SERVICE's containers (running; all with stopped=True), sorted; no one-offs."""
    _, out = docker_out(
        env,
        "ps",
        *(["-a"] if stopped else []),
        "-q",
        "--no-trunc",
        "--filter",
        f"label=com.docker.compose.project={env['PROJECT']}",
        "--filter",
        f"label=com.docker.compose.service={service}",
        "--filter",
        "label=com.docker.compose.oneoff=False",
    )
    return sorted(out.split())


def state(env: envs.Env, container: str) -> str:
    """healthy, unhealthy, starting (health check) or running, exited... ('' when gone)."""
    rc, out = docker_out(
        env, "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}", container
    )
    return out.strip() if rc == 0 else ""


def show_failure(env: envs.Env, container: str, what: str) -> None:
    print(f"last log lines of {container[:12]}:", flush=True)
    _, out = runner.output(compose.docker(env, "logs", "--tail", "10", container))
    for line in out.splitlines():
        print(f"  {line}")
    print(f"{container[:12]} is {what or 'gone'}", flush=True)


def wait_running_healthy(env: envs.Env, ids: list) -> int:
    """Every container passes its Docker health check (or runs, if its image has none)."""
    deadline = time.monotonic() + int(env["HEALTH_TIMEOUT"])
    if not ids:
        print("no container to wait for", flush=True)
        return 1
    for container in ids:
        while True:
            now = state(env, container)
            if now in ("healthy", "running"):
                print(f"{container[:12]} is {now}", flush=True)
                break
            if now not in ("unhealthy", "exited", "dead") and time.monotonic() < deadline:
                time.sleep(0.25)
                continue
            show_failure(env, container, now)
            return 1
    return 0


def health_test(env: envs.Env, container: str) -> list:
    """The container's health check as words: CMD ARGS... or CMD-SHELL TEXT; [] if none."""
    rc, out = docker_out(
        env, "inspect", "-f", '{{with .Config.Healthcheck}}{{range .Test}}{{.}}{{"\\x00"}}{{end}}{{end}}', container
    )
    words = out.rstrip("\n").split("\x00")[:-1] if rc == 0 else []
    return words if words and words[0] in ("CMD", "CMD-SHELL") else []


def probe(env: envs.Env, container: str, test: list) -> bool:
    """Run the container's own health check now (10 s at most): whether it passed."""
    if test[0] == "CMD":
        argv = ["exec", container, *test[1:]]
    else:
        argv = ["exec", container, "/bin/sh", "-c", test[1]]
    return runner.output(compose.docker(env, *argv), timeout=10)[0] == 0


# libpq's settings from the web service's own environment, for pg_dump (and a rollback's
# pg_restore) in a one-off container of BACKUP_IMAGE: PG* if it has them, else POSTGRES_HOST,
# _PORT, _DB, _USER and _PASSWORD, else DATABASE_URL (then the command's argument).
PG_SETTINGS_SH = """export PGHOST="${PGHOST:-${POSTGRES_HOST:-}}" PGPORT="${PGPORT:-${POSTGRES_PORT:-5432}}" \\
PGUSER="${PGUSER:-${POSTGRES_USER:-}}" PGPASSWORD="${PGPASSWORD:-${POSTGRES_PASSWORD:-}}" PGDATABASE="${PGDATABASE:-${POSTGRES_DB:-}}"
if [ -z "$PGHOST" ] && [ -n "${DATABASE_URL:-}" ]; then set -- "$DATABASE_URL"; else set --; fi
[ -n "$PGHOST$*" ] || { echo "the web service names no database server (PGHOST, POSTGRES_HOST or DATABASE_URL)" >&2; exit 2; }
"""
BACKUP_SH = PG_SETTINGS_SH + 'exec pg_dump -Fc "$@"'
_DB_VARIABLE = re.compile(r"^(PG[A-Z]+|POSTGRES_[A-Z_]+|DATABASE_URL)$")


def database_environment(environ_lines) -> str:
    """The web service's variables that name its database (PG*, POSTGRES_*, DATABASE_URL), as
    an --env-file: nothing else of its environment reaches the backup image."""
    kept = []
    for line in environ_lines:
        name, sep, value = str(line).partition("=")
        if sep and _DB_VARIABLE.match(name) and "\n" not in value:
            kept.append(f"{name}={value}\n")
    return "".join(kept)


class TlsProxy:
    """HTTPS at the proxy (tls.py, acme.py) for an engine whose proxy is a compose service:
    every compose environment's, and a swarm's outside its stack (MANAGER_COMPOSE_FILES)."""

    env: envs.Env

    def install_tls(self) -> int:
        """The preflight's part: the certificate the proxy serves from the switch on, installed
        (a bad one changes nothing), and nginx's word on it when the proxy will be recreated."""
        env = self.env
        try:
            if tls.install(env):
                source = tls.source(env)[0] if tls.enabled(env) else "nothing (tls: off)"
                print(f"tls: installed {tls.folder(env)} from {source}", flush=True)
        except tls.TlsError as error:
            print(f"tls: {error}", flush=True)
            return 1
        return 0 if self.proxy_accepts_tls() else 1

    def proxy_accepts_tls(self) -> bool:
        """A proxy the switch will recreate with HTTPS (tls: turned on, or published elsewhere)
        first checks its configuration with it, in a one-off container: nginx refusing it then
        would leave the site without a proxy."""
        env = self.env
        made = os.path.join(env.state_dir, "services-config")
        if (
            not (tls.enabled(env) and env["PROXY_SERVICE"])
            or (os.path.isfile(made) and tls.compose_digest(env) in envs.read_text(made).split())
            or not service_containers(env, env["PROXY_SERVICE"])  # none runs: none to lose (a first deploy)
        ):
            return True
        check = ("run", "--rm", "--no-deps", "-T", "--entrypoint", "nginx", env["PROXY_SERVICE"], "-t", "-q")
        code, out = runner.output(proxy_compose(env, *check), timeout=120)
        if code != 0:
            print(f"tls: the proxy's nginx refuses its configuration with HTTPS: {out.strip()[-500:]}", flush=True)
            print(
                "  the include of /etc/nginx/pushdeploy/*.conf belongs in the server block, with no listen 443 of its own"
            )
            return False
        print(f"tls: {env['PROXY_SERVICE']} accepts its configuration with HTTPS (nginx -t)", flush=True)
        return True

    def setup_check_tls(self) -> int:
        """bin/install: the certificate of tls: installed and, if the proxy runs with it
        mounted (made with the TLS compose file), served at once; an ACME one obtained first
        if there is none yet and the proxy answers the challenges. A review template's: checked
        only (its front proxy serves it from the next review-up, front.py)."""
        env = self.env
        if env["REVIEW_TEMPLATE"] == "yes":
            from . import front

            try:
                said = front.reload_tls(env)
            except tls.TlsError as error:
                print(f"tls: {error}", flush=True)
                return 1
            if tls.enabled(env):
                print(f"tls: {said}", flush=True)
            return 0
        return tls.apply(env, serve_tls) or self.certify()

    def certify(self, run=None) -> int:
        """TLS=acme: the certificate obtained if there is none (tls.certify)."""
        return acme.certify(self.env, serve_tls, lambda: proxy_port(self.env))

    def tls_renew(self, force: bool) -> int:
        """`bin/deploy tls-renew`: an ACME certificate renewed when due (or obtained if missing)."""
        env = self.env
        if tls.follower(env):
            print(f"tls-renew: the first host of {env.name} renews; `inv server.setup` copies it here", flush=True)
            return 0
        if tls.needs_certificate(env):
            return tls.apply(env, serve_tls) or self.certify()
        return acme.renew(env, serve_tls, force)

    def tls_finish_steps(self) -> list:
        return ["certificate"] if tls.needs_certificate(self.env) and not tls.fleet(self.env) else []

    def finish_tls(self, run) -> None:
        """After the switch: an ACME environment without its certificate gets it now that the
        proxy answers (a failure leaves plain HTTP serving, and says why)."""
        from .pipeline import step

        if tls.needs_certificate(self.env) and not tls.fleet(self.env):  # a fleet's: server.setup (acme.py)
            step(run, "certificate", self.certify)


class ComposeEngine(TlsProxy, Strategy):
    """The steps a compose environment runs before its switch (Slots and Recreate add theirs)."""

    def __init__(self, env: envs.Env):
        from .roles import Roles

        self.env = env
        self.database_steps = [("database", self.database)]
        self.roles = Roles(env)

    def with_roles(self, steps: list) -> list:
        """The switch steps with the roles' start before the last (roles.py): the new
        workers start once the new web is up, before it serves."""
        return steps[:-1] + [("roles", self.roles.start)] + steps[-1:] if self.roles.roles else steps

    def role_finish_steps(self) -> list:
        """The step finish_roles runs, by name (what plan lists)."""
        return ["retire-roles"] if self.roles.roles else []

    def finish_roles(self, run) -> None:
        from .pipeline import step

        if self.roles.roles:
            step(run, "retire-roles", self.roles.retire)
        else:  # no role here (any more): those this host ran stop
            self.roles.retire_displaced()

    def interrupted(self, run) -> None:
        """A run stopped half way: undo, unless the new version serves already (then the
        old roles still go)."""
        if run.switched:
            self.roles.retire(run)
        else:
            self.undo(run)

    def status(self) -> dict:
        from . import roles
        from .status import compose_services

        compose_services(self.env)
        return roles.status(self.env)

    def plan_migrations(self, version: str) -> list:
        env = self.env
        pull = compose.compose(env, "pull", "-q", env["WEB_SERVICE"], version=version)
        code, out = runner.output(pull)
        if code:
            last = out.rstrip("\n").rsplit("\n", 1)[-1]
            return [f"migrations=unknown (could not pull {version}: {last})"]
        migrate = compose.manage(env, version, ["migrate", "--plan"])
        code, out = runner.output(migrate)
        head = (
            f"migrations=unknown (migrate --plan failed with exit {code}; is the database up?)"
            if code
            else "migrations=planned"
        )
        return [head] + [f"migration={line}" for line in out.rstrip("\n").split("\n")]

    def teardown(self, volumes: bool) -> list:
        env = self.env
        code, out = docker_out(env, "version", "-f", "{{.Server.Version}}")
        if code != 0:
            raise Refused(f"docker does not answer ({out.strip()}): {env.name} stays as it is", 1)
        if env["REVIEW_TEMPLATE"] == "yes":  # never runs its own project: its front proxy and network go
            return remove_labelled(env, volumes, f"label=pushdeploy.review={env.name}") + remove_labelled(env, volumes)
        if os.path.isfile(os.path.join(env.app_dir, ".env")):
            down = ("down", "--remove-orphans", "--timeout", "10", *(("--volumes",) if volumes else ()))
            code, out = runner.output(compose.compose(env, *down))
            if code != 0:
                raise Refused(f"compose down failed: {out.strip()[-300:]}: {env.name}'s files are left as they are", 1)
        return remove_labelled(env, volumes)

    def setup_check(self) -> int:
        return self.setup_check_tls()

    def preflight(self, run) -> int:
        env = self.env
        if not os.path.isfile(os.path.join(env.app_dir, ".env")):
            print(f"missing {env.app_dir}/.env: run `inv server.setup --env {env.name}`", flush=True)
            return 1
        if self.install_tls() != 0:
            return 1
        if runner.streamed(compose.compose(env, "config", "-q", version=run.version)) != 0:
            print("the compose files do not validate", flush=True)
            return 1
        return 0

    def pull(self, run) -> int:
        env = self.env
        print(f"pulling {env['WEB_SERVICE']} at {run.version}", flush=True)
        if order.is_pinned(env["PULL_CHANNEL"], run.version):
            if self.pull_pinned(run) != 0:
                return 1
        elif (
            pulled(
                env,
                compose.compose(env, "pull", "-q", env["WEB_SERVICE"], version=run.version),
                f"{env['WEB_SERVICE']} at {run.version}",
            )
            != 0
        ):
            return 1
        # The history pins the version to what the tag pointed to now: a moved tag shows.
        ref = web_image_ref(env, run.version)
        digest = repo_digest(env, ref) if ref else ""
        if digest:
            run.digest = digest
            print(f"digest: {digest}", flush=True)
        return 0

    def pull_pinned(self, run) -> int:
        """A version the pull agent pinned: the image by its digest, tagged as the version
        locally (the registry has no such tag); from the local copy if it is still there."""
        env = self.env
        pins = os.path.join(env.state_dir, "pull", "pins")
        digest = pinned_digest(pins, run.version)
        if not digest:
            print(f"no digest pinned for {run.version} in {pins}", flush=True)
            return 1
        ref = web_image_ref(env, run.version)
        if not ref.endswith(":" + run.version):
            print("cannot tell the web image's repository from the compose files", flush=True)
            return 1
        repo = ref[: -len(run.version) - 1]
        print(f"pinned: {repo}@{digest}", flush=True)
        if docker_out(env, "image", "inspect", f"{repo}@{digest}")[0] != 0:
            if pulled(env, compose.docker(env, "pull", "-q", f"{repo}@{digest}"), f"{repo}@{digest}") != 0:
                return 1
        return runner.streamed(compose.docker(env, "tag", f"{repo}@{digest}", ref))

    def database(self, run) -> int:
        """The database must answer before migrations run (depends_on does not wait).
        A healthy one is left alone: `compose up` costs a second even when it does nothing."""
        env = self.env
        service = env["DB_SERVICE"]
        if not service:
            print("no db_service configured", flush=True)
            return 0
        for container in service_containers(env, service):
            if state(env, container) == "healthy":
                print(f"{service} is healthy", flush=True)
                return 0
        if runner.streamed(compose.compose(env, "up", "-d", "--no-recreate", service)) != 0:
            return 1
        return wait_running_healthy(env, service_containers(env, service))

    def backup(self, run) -> int:
        """pg_dump of the database service, custom format, into a root-only directory;
        the newest BACKUP_KEEP are kept. A failed backup stops the deploy. Without a
        database service, of the database server web names, from a one-off container of
        BACKUP_IMAGE beside a running web container."""
        env = self.env
        if not env["DB_SERVICE"]:
            with self.beside_web("backup") as options:
                if options is None:
                    return 1
                print(f"pg_dump in a one-off container of {env['BACKUP_IMAGE']} beside web", flush=True)
                return backup_into(
                    run, compose.docker(env, "run", *options, env["BACKUP_IMAGE"], "sh", "-c", BACKUP_SH)
                )
        dump = 'pg_dump -U "$POSTGRES_USER" -Fc "$POSTGRES_DB"'  # the container's shell expands it
        command = compose.compose(env, "exec", "-T", env["DB_SERVICE"], "sh", "-c", dump)
        return backup_into(run, command)

    def restore(self, run, path: str) -> int:
        from . import refresh

        env = self.env
        if not env["DB_SERVICE"]:
            with self.beside_web("restore") as options:
                if options is None:
                    return 1
                command = compose.docker(
                    env, "run", "-i", *options, env["BACKUP_IMAGE"], "sh", "-c", refresh.REPLACE_EXTERNAL_SH
                )
                return refresh.replace_with(run, path, command)
        connect = '-U "$POSTGRES_USER" -d "$POSTGRES_DB"'  # the container's shell expands them
        command = compose.compose(env, "exec", "-T", env["DB_SERVICE"], "sh", "-c", refresh.replace_sh(connect))
        return refresh.replace_with(run, path, command)

    @contextlib.contextmanager
    def beside_web(self, name: str):
        """`docker run` options for a one-off container NAME in the network of a running web
        container (it reaches the database server as web does), with web's database variables
        (a root-only file, gone afterwards); None, said why, when there is none."""
        import json
        import tempfile

        env = self.env
        if not env["BACKUP_IMAGE"]:
            print("backup needs db_service, or backup_image to reach the database server web names", flush=True)
            yield None
            return
        from . import warm

        kept = warm.read(env).get("containers", [])  # the previous version's, kept for a rollback: not these
        running = [c for c in service_containers(env, env["WEB_SERVICE"]) if c not in kept]
        code, out = docker_out(env, "inspect", "-f", "{{json .Config.Env}}", running[0]) if running else (1, "")
        if code != 0:
            print(f"no running {env['WEB_SERVICE']} container to reach the database server from", flush=True)
            yield None
            return
        with tempfile.NamedTemporaryFile("w", prefix="pd-env-") as env_file:
            env_file.write(database_environment(json.loads(out.strip() or "[]") or []))
            env_file.flush()
            yield [
                "--rm",
                "--name",
                f"{env['PROJECT']}-{name}-{os.getpid()}",
                "--network",
                f"container:{running[0]}",
                "--env-file",
                env_file.name,
            ]

    def one_off(self, run, argv: list, environ: dict) -> int:
        """ARGV in a one-off container of the new version (compose run); its exit status.
        With PRIORITY=low it gets a low CPU weight as soon as it exists."""
        extra = tuple(word for key, value in environ.items() for word in ("-e", f"{key}={value}"))
        command = compose.one_off(self.env, run.version, *argv, extra=extra)
        done = threading.Event()
        if self.env["PRIORITY"] == "low":
            threading.Thread(target=self._yield_one_off, args=(done,), daemon=True).start()
        try:
            return runner.streamed(command)
        finally:
            done.set()

    def _yield_one_off(self, done: threading.Event) -> None:
        env = self.env
        for _ in range(100):
            _, out = docker_out(
                env,
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={env['PROJECT']}",
                "--filter",
                f"label=com.docker.compose.service={env['WEB_SERVICE']}",
                "--filter",
                "label=com.docker.compose.oneoff=True",
            )
            if out.split():
                docker_out(env, "update", "--cpu-shares", str(LOW_CPU_SHARES), out.split()[0])
                return
            if done.wait(0.1):
                return


def remove_labelled(env: envs.Env, volumes: bool, label: str = "") -> list:
    """What compose made for the project and compose alone would leave (its files gone, a
    run's one-off containers): containers, networks, volumes if asked, by compose's label (or
    LABEL: a review template's front proxy and network)."""
    by = "compose" if not label else "the review front"
    label = label or f"label=com.docker.compose.project={env['PROJECT']}"
    gone = []
    kinds = (("containers", ("ps", "-aq"), ("rm", "-f")), ("networks", ("network", "ls", "-q"), ("network", "rm")))
    if volumes:
        kinds += (("volumes", ("volume", "ls", "-q"), ("volume", "rm")),)
    for what, listing, remove in kinds:
        ids = docker_out(env, *listing, "--filter", label)[1].split()
        if ids:
            runner.output(compose.docker(env, *remove, *ids))
        gone.append(f"{len(ids)} {what} left by {by}" if ids else "")
    kept = [] if volumes else docker_out(env, "volume", "ls", "-q", "--filter", label)[1].split()
    gone.append(f"kept {len(kept)} volume(s): {' '.join(kept)} (--volumes removes them)" if kept else "")
    return [line for line in gone if line]


def backup_into(run, command: runner.Command) -> int:
    """Run COMMAND (a pg_dump to stdout) into the next backup file; rotate."""
    env = run.env
    folder = os.path.join(env.state_dir, "backups")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{run.previous}.dump")
    rc = runner.to_file(command, path + ".part")
    if rc != 0 or not _is_dump(path + ".part"):
        os.unlink(path + ".part")
        return rc or 1
    os.replace(path + ".part", path)
    run.backup = path
    print(f"saved {path} ({human_size(os.path.getsize(path))})", flush=True)
    dumps = sorted(
        (os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".dump")),
        key=os.path.getmtime,
        reverse=True,
    )
    for old in dumps[int(env["BACKUP_KEEP"]) :]:
        if old != run.restore:  # what this run is about to restore stays
            os.unlink(old)
    return 0


def _is_dump(path: str) -> bool:
    with open(path, "rb") as file:
        return file.read(5) == b"PGDMP"


def human_size(size: int) -> str:
    """Like du -h: 4.0K, 12M."""
    for unit in ("K", "M", "G", "T"):
        size /= 1024
        if size < 10:
            return f"{max(size, 0.1):.1f}{unit}"
        if size < 1024:
            return f"{size:.0f}{unit}"
    return f"{size:.0f}P"


def web_image_ref(env: envs.Env, version: str) -> str:
    """The web service's image as compose renders it at VERSION (REPOSITORY:TAG), or ''."""
    rc, out = runner.output(compose.compose(env, "config", version=version), stderr=False)
    return image_of(out, env["WEB_SERVICE"]) if rc == 0 else ""


def image_of(config: str, service: str) -> str:
    """SERVICE's image in `compose config`'s YAML (compose v1 and v2), or ''."""
    in_services = in_service = False
    for line in config.splitlines():
        if line and not line.startswith(" "):
            in_services, in_service = line == "services:", False
        elif in_services and re.match(r"^  [^ ]", line):
            in_service = line == f"  {service}:"
        elif in_service and line.startswith("    image: "):
            return line[len("    image: ") :].replace('"', "").replace("'", "")
    return ""


def repo_digest(env: envs.Env, ref: str) -> str:
    """The registry digest of REF (sha256:...), from the local image; '' if none."""
    repo = ref.rsplit(":", 1)[0]
    rc, out = docker_out(env, "image", "inspect", "-f", '{{join .RepoDigests " "}}', ref)
    for entry in out.split() if rc == 0 else ():
        name, _, digest = entry.partition("@")
        if name == repo and re.match(r"^sha256:[0-9a-f]{64}$", digest):
            return digest
    return ""


def pinned_digest(pins: str, version: str) -> str:
    try:
        with open(pins) as file:
            for line in file:
                words = line.split()
                if len(words) == 2 and words[0] == version:
                    return words[1]
    except FileNotFoundError:
        pass
    return ""


def reload_proxy_if_changed(env: envs.Env) -> bool:
    """The proxy's config files come with `inv server.setup`, its certificate with the deploy's
    preflight (tls.py); when either changed since nginx last loaded them, nginx reloads them
    gracefully (old workers finish)."""
    proxy = env["PROXY_SERVICE"]
    applied = os.path.join(env.state_dir, "proxy-config")
    same = os.path.isfile(applied) and envs.read_text(applied) == env["APP_FILES_SHA256"]
    if not proxy or (same and tls.served(env)):
        return True
    if not reload_proxy(env):
        return False
    envs.write_text(applied, env["APP_FILES_SHA256"] + "\n")
    tls.record_served(env)
    print(f"reloaded {proxy} (its configuration changed)", flush=True)
    return True


def proxy_compose(env: envs.Env, *args: str) -> runner.Command:
    """A compose command for the proxy: the environment's compose files, or a swarm's outside
    its stack (stackfile.manager_compose)."""
    if env["ENGINE"] == "swarm":
        from . import stackfile

        return stackfile.manager_compose(env, *args)
    return compose.compose(env, *args)


def reload_proxy(env: envs.Env) -> bool:
    """nginx in the proxy checks its configuration, then reloads it gracefully."""
    for args in (("nginx", "-t", "-q"), ("nginx", "-s", "reload")):
        if runner.streamed(proxy_compose(env, "exec", "-T", env["PROXY_SERVICE"], *args)) != 0:
            return False
    return True


def serve_tls(env: envs.Env) -> bool:
    """The proxy runs with tls/ mounted (made with the TLS compose file) and reloaded gracefully."""
    return proxy_mounts(env, tls.MOUNT) and reload_proxy(env)


def proxy_port(env: envs.Env) -> tuple:
    """(where the proxy's port 80 is published on this host, [address:]port, '') or ('', why not)."""
    if not env["PROXY_SERVICE"] or not proxy_mounts(env, tls.ACME_MOUNT):
        return "", "the proxy does not run with ACME's webroot yet (the next deploy recreates it with it)"
    code, out = runner.output(proxy_compose(env, "port", env["PROXY_SERVICE"], "80"))
    lines = out.strip().splitlines()
    if code == 0 and lines and ":" in lines[-1]:
        return lines[-1].strip(), ""
    return "", f"{env['PROXY_SERVICE']} publishes no port 80 on this host: ACME's server must reach it there"


def proxy_mounts(env: envs.Env, destination: str) -> bool:
    """The proxy runs, with something mounted at DESTINATION."""
    ids = service_containers(env, env["PROXY_SERVICE"]) if env["PROXY_SERVICE"] else []
    listing = docker_out(env, "inspect", "-f", "{{range .Mounts}}{{.Destination}} {{end}}", ids[0])[1] if ids else ""
    return destination in listing.split()
