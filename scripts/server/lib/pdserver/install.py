"""bin/install: puts the server side of one environment in place, as root.

`inv server.setup` uploads a bundle (made by pushdeploy/plan.py) over the admin connection
and runs bin/install from it once per host: `install BUNDLE ENV DEPLOY_USER APP_DIR [--host=N]`
(N: the host's position in the environment's hosts, 1 the first; --first is --host=1).
Every action compares first and changes only what differs, so a second run reports
"unchanged" everywhere. It installs:
  PREFIX/{bin,lib}/...                     root-owned code (PD_SERVER_FILES)
  ETC/ENV.conf                             the environment's settings
  /etc/sudoers.d/pushdeploy-DEPLOY_USER    DEPLOY_USER may sudo bin/deploy only
  ~DEPLOY_USER/.ssh/authorized_keys        keys forced to the entrypoint
  KEYS_FILE                                what each named key may do
  APP_DIR/...                              compose files, nginx config, .env (0600)
  ETC/ENV.webhooks                         the notification webhooks (0600)
  ETC/ENV.docker/config.json               root's Docker login to a private registry (0600),
  /etc/docker/certs.d/REGISTRY/ca.crt        and its CA (first: a refused login changes nothing)
  the pull agent (pull mode)               a systemd timer, else a cron entry
  the cron jobs (cron:)                    a systemd timer each, else one cron.d file
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile

from . import acme, agent, compose, conf, cron, facts, roles
from . import env as envs

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SYSTEMD_RUN, SYSTEMD_DIR, CRON_DIR = "/run/systemd/system", "/etc/systemd/system", "/etc/cron.d"
CERTS_DIR = "/etc/docker/certs.d"  # a registry's CA: certs.d/HOST:PORT/ca.crt
SUDOERS_MARK = "# Managed by pushdeploy:"  # the first line of the deploy account's sudo rule (teardown looks for it)


class Failed(Exception):
    """The installer cannot go on: what to do is in the message."""


class Installer:
    def __init__(self, bundle: str, env: str, user: str, app_dir: str, first: bool = True, position: int = 0):
        self.bundle, self.env, self.user, self.app_dir = bundle, env, user, app_dir
        self.position = position or (1 if first else 0)  # this host's in the environment's hosts (roles)
        self.first = self.position == 1  # the environment's first host (its cron jobs with hosts: first run here)
        self.changed = 0

    def report(self, state: str, what: str) -> None:
        if state == "changed":
            self.changed += 1
        print(f"{state:<9} {what}", flush=True)

    def put_file(self, src: str, dest: str, mode: int, owner: str = "root") -> None:
        """SRC at DEST with MODE, owned by OWNER, only if its content or mode differ."""
        uid = pwd.getpwnam(owner).pw_uid
        try:
            info = os.stat(dest)
            same = filecmp.cmp(src, dest, shallow=False) and (info.st_mode & 0o7777, info.st_uid) == (mode, uid)
        except FileNotFoundError:
            same = False
        if same:
            self.report("unchanged", dest)
            return
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = dest + ".pushdeploy-new"
        shutil.copyfile(src, tmp)
        os.chown(tmp, uid, 0)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
        self.report("changed", dest)

    def put_text(self, text: str, dest: str, mode: int) -> None:
        with tempfile.NamedTemporaryFile("w", delete=False) as tmp:
            tmp.write(text)
        try:
            self.put_file(tmp.name, dest, mode)
        finally:
            os.unlink(tmp.name)

    def put_dir(self, path: str, mode: int) -> None:
        try:
            info = os.stat(path)
            if os.path.isdir(path) and (info.st_mode & 0o7777, info.st_uid) == (mode, 0):
                return
        except FileNotFoundError:
            pass
        os.makedirs(path, exist_ok=True)
        os.chown(path, 0, 0)
        os.chmod(path, mode)
        self.report("changed", path + "/")

    # ------------------------------------------------------------------ the parts

    def install_registry(self) -> None:
        """Root's Docker logged in to the environment's private registry, in ETC/ENV.docker
        (every docker command of the environment runs with DOCKER_CONFIG there). It runs
        first: a login the registry refuses stops the setup before anything changed. The
        bundle carries a password only when the admin's side has one (a rotation); without
        one, the login this host has stays."""
        settings = conf.parse(_read(os.path.join(self.bundle, "env.conf")))
        server, user = conf.value(settings, "REGISTRY"), conf.value(settings, "REGISTRY_USER")
        folder = envs.docker_config(os.path.join(facts.ETC, f"{self.env}.conf"))
        if not server:
            if os.path.isdir(folder):
                shutil.rmtree(folder)
                self.report("changed", f"{folder}/ (removed: no registry)")
            return
        if not (facts.matches(facts.REGISTRY_RE, server) and facts.matches(facts.REGISTRY_USER_RE, user)):
            raise Failed(f"invalid registry '{server}' or user '{user}'")
        ca, trusted = os.path.join(self.bundle, "registry-ca.crt"), os.path.join(CERTS_DIR, server, "ca.crt")
        password, config = os.path.join(self.bundle, "registry-password"), os.path.join(folder, "config.json")
        if not os.path.isfile(password):
            if server not in _logins(config):
                raise Failed(
                    f"no login to the registry {server} on this host yet: set DEPLOY_{self.env.upper().replace('-', '_')}"
                    f"_REGISTRY_PASSWORD or DEPLOY_REGISTRY_PASSWORD (the project's .env, or CI's secrets) and run "
                    f"server.setup again"
                )
            self.report("unchanged", f"{config} (login to {server} as {user} kept: no password given)")
            return
        was = _read_bytes(trusted)
        if os.path.isfile(ca):  # Docker reads certs.d at each connection: no restart
            self.put_file(ca, trusted, 0o644)
        fresh = tempfile.mkdtemp(prefix=f"pushdeploy-{self.env}.docker-")  # 0700, root's
        try:
            environ = {**os.environ, "DOCKER_CONFIG": fresh}
            docker_host = conf.value(settings, "DOCKER_HOST")
            if docker_host:
                environ["DOCKER_HOST"] = docker_host
            with open(password, "rb") as stdin:
                login = subprocess.run(
                    ["docker", "login", "--username", user, "--password-stdin", server],
                    stdin=stdin,
                    capture_output=True,
                    env=environ,
                    check=False,
                )
            if login.returncode != 0:
                _restore(trusted, was)  # the CA this host had before, or none
                said = (login.stderr or login.stdout).decode(errors="replace").strip().splitlines()
                said = said[-1] if said else "no reason given"
                what = (
                    "refused the login as" if compose.REGISTRY_REFUSED.search(said) else "could not be logged in to as"
                )
                raise Failed(
                    f"the registry {server} {what} {user} ({said}): "
                    "check the password in DEPLOY_REGISTRY_PASSWORD, the user in registry.user, and that this host "
                    "reaches the registry (and trusts its certificate: registry.ca); nothing was changed"
                )
            self.put_dir(facts.ETC, 0o755)
            self.put_dir(folder, 0o700)
            self.put_file(os.path.join(fresh, "config.json"), config, 0o600)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)

    def ensure_user(self) -> None:
        before = self.changed
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            # Hosts that share /etc/passwd (containers, the multi-host sandbox) may race
            # here: an account another installer just made is as good as ours.
            made = subprocess.run(
                [
                    "useradd",
                    "--create-home",
                    "--shell",
                    "/bin/bash",
                    "--comment",
                    "pushdeploy deploy account",
                    self.user,
                ],
                check=False,
            )
            if made.returncode != 0 and not _exists(self.user):
                raise Failed(f"could not create the deploy account {self.user}") from None
            self.report("changed", f"user {self.user}")
        account = pwd.getpwnam(self.user)
        # An account without its home (made elsewhere, or by a racing installer on a host
        # that shares /etc/passwd but not /home) gets one, owned as useradd would.
        if account.pw_dir and not os.path.isdir(account.pw_dir):
            os.makedirs(account.pw_dir)
            os.chown(account.pw_dir, account.pw_uid, account.pw_gid)
            os.chmod(account.pw_dir, 0o755)
            self.report("changed", account.pw_dir + "/")
        # A home left by an earlier account of that name (made again, with another uid)
        # belongs to no one sshd accepts: key logins would be refused ("bad ownership").
        elif account.pw_dir and os.stat(account.pw_dir).st_uid not in (account.pw_uid, 0):
            os.chown(account.pw_dir, account.pw_uid, account.pw_gid)
            self.report("changed", f"{account.pw_dir}/ (owner: {self.user}, whose uid it had not)")
        # A new account is locked ('!'), which sshd refuses even for keys: '*' allows key
        # logins and still no password.
        shadow = subprocess.run(["getent", "shadow", self.user], capture_output=True, text=True, check=False).stdout
        if shadow.split(":")[1:2] and shadow.split(":")[1].startswith("!"):
            subprocess.run(["usermod", "-p", "*", self.user], check=True)
            self.report("changed", f"user {self.user} unlocked for key logins")
        if self.changed == before:
            self.report("unchanged", f"user {self.user}")

    def install_code(self) -> None:
        for path in (facts.PREFIX, f"{facts.PREFIX}/bin", f"{facts.PREFIX}/lib"):
            self.put_dir(path, 0o755)
        for name in facts.SERVER_FILES:
            src = os.path.join(self.bundle, name)
            if not os.path.isfile(src):
                raise Failed(f"the bundle lacks {name}: update pushdeploy on your side and run server.setup again")
            if os.path.dirname(name) not in ("bin", "lib"):
                self.put_dir(os.path.join(facts.PREFIX, os.path.dirname(name)), 0o755)
            self.put_file(src, os.path.join(facts.PREFIX, name), 0o755 if name.startswith("bin/") else 0o644)
        self.remove_stale_code()
        self.put_dir(facts.ETC, 0o755)
        self.put_file(os.path.join(self.bundle, "env.conf"), os.path.join(facts.ETC, f"{self.env}.conf"), 0o644)
        self.put_dir(facts.STATE, 0o700)

    def remove_stale_code(self) -> None:
        """Code an earlier server side installed and this one no longer has (the bash verbs
        of lib/*.sh, a module that moved) goes: nothing runs it, and it only misleads."""
        listed = set(facts.SERVER_FILES)
        for folder in ("lib", "lib/pdserver", *facts.FACTS["PD_SERVER_FOLDERS"].split()):
            path = os.path.join(facts.PREFIX, folder)
            names = sorted(os.listdir(path)) if os.path.isdir(path) else []
            for name in names:
                relative = f"{folder}/{name}"
                if (
                    name.endswith((".sh", ".py"))
                    and relative not in listed
                    and os.path.isfile(os.path.join(path, name))
                ):
                    os.unlink(os.path.join(path, name))
                    self.report("changed", f"{facts.PREFIX}/{relative} (removed: no longer part of the server side)")

    def install_sudoers(self) -> None:
        text = (
            f"{SUDOERS_MARK} {self.user} may run bin/deploy as root, nothing else.\n"
            f"{self.user} ALL=(root) NOPASSWD: {facts.PREFIX}/bin/deploy\n"
        )
        with tempfile.NamedTemporaryFile("w", delete=False) as tmp:
            tmp.write(text)
        try:
            if subprocess.run(["visudo", "-cqf", tmp.name], capture_output=True, check=False).returncode != 0:
                raise Failed(f"the sudoers line for {self.user} does not validate")
            self.put_file(tmp.name, f"/etc/sudoers.d/pushdeploy-{self.user}", 0o440)
        finally:
            os.unlink(tmp.name)

    def install_keys(self) -> None:
        """The account cannot change its own keys: ~/.ssh and the file belong to root. Each
        named key's scope goes to KEYS_FILE, which bin/deploy reads for a --key=NAME request."""
        home = pwd.getpwnam(self.user).pw_dir
        self.put_dir(os.path.join(home, ".ssh"), 0o755)
        self.put_file(
            os.path.join(self.bundle, "authorized_keys"), os.path.join(home, ".ssh", "authorized_keys"), 0o644
        )
        scopes = os.path.join(self.bundle, "keys.json")
        if os.path.isfile(scopes):
            self.put_file(scopes, facts.KEYS_FILE, 0o644)
        elif os.path.isfile(facts.KEYS_FILE):
            os.unlink(facts.KEYS_FILE)
            self.report("changed", f"{facts.KEYS_FILE} (removed: no named keys)")

    def install_app(self) -> None:
        parent = os.path.dirname(self.app_dir)
        if not os.path.isdir(parent):  # a missing parent is made root-owned; /srv, /home/x are left as they are
            self.put_dir(parent, 0o755)
        self.put_dir(self.app_dir, 0o755)
        source = os.path.join(self.bundle, "app")
        files = sorted(
            os.path.relpath(os.path.join(folder, name), source)
            for folder, _, names in os.walk(source)
            for name in names
        )
        for name in files:
            self.put_file(os.path.join(source, name), os.path.join(self.app_dir, name), 0o644)
        self.install_dotenv()

    def install_dotenv(self) -> None:
        """.env holds the deployed VERSION and the app's secrets: made from the template once,
        then only keys missing on the server are added; values there are never changed."""
        dest, template = os.path.join(self.app_dir, ".env"), os.path.join(self.bundle, "dotenv")
        if not os.path.isfile(template):
            if not os.path.isfile(dest):
                self.report("missing", f"{dest} (give the environment a server_env file in invoke.yaml)")
            return
        if not os.path.isfile(dest):
            self.put_file(template, dest, 0o600)
            return
        with open(dest, "rb") as file:
            current = file.read()
        have = {m.group(1) for m in re.finditer(rb"^([A-Za-z_][A-Za-z0-9_]*)=", current, re.M)}
        added = []
        with open(template, "rb") as file:
            for line in file.read().splitlines():
                match = re.match(rb"^([A-Za-z_][A-Za-z0-9_]*)=", line)
                if match and match.group(1) not in have:
                    added.append(line)
                    have.add(match.group(1))
        if added:
            text = current + (b"" if not current or current.endswith(b"\n") else b"\n") + b"\n".join(added) + b"\n"
            fd, tmp = tempfile.mkstemp(dir=self.app_dir, prefix=".env.")
            with os.fdopen(fd, "wb") as file:
                file.write(text)
            os.chmod(tmp, 0o600)
            os.replace(tmp, dest)
            self.report("changed", f"{dest} ({len(added)} new keys; existing values kept)")
        self.put_file(dest, dest, 0o600)

    def install_webhooks(self) -> None:
        """The webhook URLs are secrets: root-only, never printed. The bundle carries them only
        when the admin's .env sets DEPLOY_<ENV>_WEBHOOKS: empty removes them, unset keeps them."""
        source, dest = os.path.join(self.bundle, "webhooks"), os.path.join(facts.ETC, f"{self.env}.webhooks")
        if not os.path.isfile(source):
            return
        if os.path.getsize(source):
            self.put_file(source, dest, 0o600)
        elif os.path.isfile(dest):
            os.unlink(dest)
            self.report("changed", f"{dest} (removed: no webhooks)")

    def install_pull_agent(self) -> None:
        """The environment's pull agent (or, with no channel, none): a systemd timer where
        systemd runs as PID 1, else a cron entry."""
        settings = conf.parse(_read(os.path.join(self.bundle, "env.conf")))
        channel = conf.value(settings, "PULL_CHANNEL")
        every = conf.value(settings, "PULL_EVERY", "60")
        if channel and not facts.matches(facts.CHANNEL_RE, channel):
            raise Failed(f"invalid pull channel '{channel}'")
        if not re.fullmatch(r"[1-9][0-9]{0,5}", every):
            raise Failed(f"invalid pull interval '{every}'")
        unit = agent.unit(self.env)
        if not channel:
            self.remove_pull_agent(unit)
            return
        self.put_dir(os.path.join(facts.STATE, self.env), 0o700)
        self.put_dir(os.path.join(facts.STATE, self.env, "pull"), 0o700)
        scheduler = agent.scheduler(SYSTEMD_RUN, CRON_DIR)
        if scheduler == "systemd":
            self.install_timer(unit, every, channel)
        elif scheduler == "cron":
            self.put_text(agent.cron_text(self.env, int(every)), os.path.join(CRON_DIR, unit), 0o644)
            minutes = agent.cron_minutes(int(every))
            self.report(
                "agent",
                f"pull agent of {self.env}: cron ({CRON_DIR}/{unit}, no systemd as PID 1), every {minutes} min, channel {channel}",
            )
        else:
            self.report(
                "missing",
                f"pull agent of {self.env}: neither systemd (PID 1) nor {CRON_DIR}: install cron, or run "
                f"`{facts.PREFIX}/bin/deploy pull {self.env}` from your own scheduler",
            )

    def install_timer(self, unit: str, every: str, channel: str) -> None:
        """The agent as a systemd timer (and a cron entry of an earlier install removed)."""
        cron = os.path.join(CRON_DIR, unit)
        if os.path.isfile(cron):
            os.unlink(cron)
            self.report("changed", f"removed {cron} (systemd runs the agent now)")
        before = self.changed
        self.put_text(agent.service_text(self.env), os.path.join(SYSTEMD_DIR, f"{unit}.service"), 0o644)
        self.put_text(agent.timer_text(self.env, int(every)), os.path.join(SYSTEMD_DIR, f"{unit}.timer"), 0o644)
        timer = f"{unit}.timer"
        if self.changed > before:
            started = _all_ok(
                ["systemctl", "daemon-reload"], ["systemctl", "enable", timer], ["systemctl", "restart", timer]
            )
            if not started:
                raise Failed(f"could not start {timer} (see `systemctl status {timer}`)")
        elif (
            subprocess.run(["systemctl", "is-active", timer], capture_output=True, text=True).stdout.strip() != "active"
        ):
            if not _all_ok(["systemctl", "enable", "--now", timer]):
                raise Failed(f"could not start {timer} (see `systemctl status {timer}`)")
            self.report("changed", f"started {timer}")
        self.report("agent", f"pull agent of {self.env}: systemd timer {timer}, every {every} s, channel {channel}")

    def install_cron(self) -> None:
        """The environment's cron jobs that run on this host (hosts all: every host; first: the
        environment's first host, which server.setup names): a timer each under systemd, else
        one cron.d file; what is no longer wanted goes."""
        lines = conf.parse(_read(os.path.join(self.bundle, "env.conf"))).get("CRON_JOB", [])
        try:
            chosen = [job for job in map(cron.parse_line, lines) if cron.runs_here(job, self.first)]
        except ValueError as error:
            raise Failed(f"CRON_JOB: {error}") from None
        scheduler = agent.scheduler(SYSTEMD_RUN, CRON_DIR)
        timers = {job.name for job in chosen} if scheduler == "systemd" else set()
        for name in sorted(cron.installed_timers(self.env, SYSTEMD_DIR) - timers):
            for what in agent.remove(cron.unit(self.env, name), SYSTEMD_DIR, CRON_DIR):
                self.report("changed", f"removed cron job {name} of {self.env} ({what})")
        entry = os.path.join(CRON_DIR, cron.unit(self.env))
        if os.path.isfile(entry) and (scheduler != "cron" or not chosen):
            os.unlink(entry)
            self.report("changed", f"removed {entry}")
        if not chosen:
            return
        self.put_dir(os.path.join(facts.STATE, self.env), 0o700)
        self.put_dir(os.path.join(facts.STATE, self.env, "cron"), 0o700)
        names = ", ".join(f"{job.name} ({' '.join(job.schedule)})" for job in chosen)
        if scheduler == "cron":
            self.put_text(cron.cron_text(self.env, chosen), entry, 0o644)
            self.report("cron", f"cron jobs of {self.env} on this host: {names}: cron ({entry}, no systemd as PID 1)")
        elif scheduler == "systemd":
            for job in chosen:
                self.install_job_timer(job)
            self.report("cron", f"cron jobs of {self.env} on this host: {names}: systemd timers")
        else:
            self.report("missing", f"cron jobs of {self.env}: neither systemd (PID 1) nor {CRON_DIR}: install cron")

    def install_job_timer(self, job) -> None:
        unit = cron.unit(self.env, job.name)
        before = self.changed
        self.put_text(cron.service_text(self.env, job), os.path.join(SYSTEMD_DIR, f"{unit}.service"), 0o644)
        self.put_text(cron.timer_text(self.env, job), os.path.join(SYSTEMD_DIR, f"{unit}.timer"), 0o644)
        timer = f"{unit}.timer"
        if self.changed > before or not _all_ok(["systemctl", "is-active", "--quiet", timer]):
            if not _all_ok(
                ["systemctl", "daemon-reload"], ["systemctl", "enable", timer], ["systemctl", "restart", timer]
            ):
                raise Failed(f"could not start {timer} (see `systemctl status {timer}`)")

    def install_tls_renewal(self) -> None:
        """tls.acme's renewal (acme.py): a systemd timer where systemd runs as PID 1, else a cron
        entry, twice a day; none without it. certbot must be on the host."""
        settings = conf.parse(_read(os.path.join(self.bundle, "env.conf")))
        mode, first = conf.value(settings, "TLS", "off"), conf.value(settings, "TLS_ACME_FIRST", "")
        unit = acme.unit(self.env)
        if mode != "acme" or (first and self.position > 1):  # a fleet's first host alone renews
            for what in agent.remove(unit, SYSTEMD_DIR, CRON_DIR):
                self.report("changed", f"removed the certificate renewal of {self.env} ({what})")
            return
        if not shutil.which("certbot"):
            raise Failed("tls.acme needs certbot on this host: apt-get install certbot (Debian's package)")
        self.put_dir(os.path.join(facts.STATE, self.env), 0o700)
        scheduler = agent.scheduler(SYSTEMD_RUN, CRON_DIR)
        if scheduler == "cron":
            self.put_text(acme.cron_text(self.env), os.path.join(CRON_DIR, unit), 0o644)
            self.report("tls", f"certificate renewal of {self.env}: cron ({CRON_DIR}/{unit}), twice a day")
        elif scheduler == "systemd":
            before = self.changed
            self.put_text(acme.service_text(self.env), os.path.join(SYSTEMD_DIR, f"{unit}.service"), 0o644)
            self.put_text(acme.timer_text(self.env), os.path.join(SYSTEMD_DIR, f"{unit}.timer"), 0o644)
            timer = f"{unit}.timer"
            if self.changed > before or not _all_ok(["systemctl", "is-active", "--quiet", timer]):
                if not _all_ok(
                    ["systemctl", "daemon-reload"], ["systemctl", "enable", timer], ["systemctl", "restart", timer]
                ):
                    raise Failed(f"could not start {timer} (see `systemctl status {timer}`)")
            self.report("tls", f"certificate renewal of {self.env}: systemd timer {timer}, twice a day")
        else:
            self.report(
                "missing",
                f"certificate renewal of {self.env}: neither systemd (PID 1) nor {CRON_DIR}: run "
                f"`{acme.command(self.env)}` twice a day from your own scheduler",
            )

    def install_position(self) -> None:
        """This host's position in the environment's hosts, which roles run here (roles.py)."""
        if self.position:
            self.put_dir(os.path.join(facts.STATE, self.env), 0o700)
            self.put_text(f"{self.position}\n", roles.host_file(self.env), 0o644)

    def remove_pull_agent(self, unit: str) -> None:
        for what in agent.remove(unit, SYSTEMD_DIR, CRON_DIR):
            self.report("changed", f"removed the pull agent of {self.env} ({what}): {self.env} is deployed by push")


def main(argv) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.split("\n\n", 1)[1], end="")
        return 0
    host = argv[4][len("--host=") :] if len(argv) == 5 and argv[4].startswith("--host=") else ""
    if len(argv) not in (4, 5) or not (argv[4:] in ([], ["--first"]) or (host.isdigit() and 0 < int(host) < 1000)):
        print("usage: install BUNDLE ENV DEPLOY_USER APP_DIR [--first | --host=N]", file=sys.stderr)
        return facts.EXIT_USAGE
    bundle, env, user, app_dir = argv[:4]
    os.umask(0o022)
    try:
        if os.geteuid() != 0:
            raise Failed("run as root (through sudo)")
        if not facts.matches(facts.ENV_RE, env):
            raise Failed(f"invalid environment name '{env}'")
        if not USER_RE.match(user):
            raise Failed(f"invalid user name '{user}'")
        if not app_dir.startswith("/") or len(app_dir) < 2 or ".." in app_dir:
            raise Failed("APP_DIR must be an absolute path")
        installer = Installer(bundle, env, user, app_dir, argv[4:] == ["--first"], int(host or 0))
        installer.install_registry()
        installer.ensure_user()
        installer.install_code()
        installer.install_sudoers()
        installer.install_keys()
        installer.install_app()
        installer.install_webhooks()
        installer.install_pull_agent()
        installer.install_cron()
        installer.install_position()
        installer.install_tls_renewal()
    except Failed as failed:
        print(f"pushdeploy install: {failed}", file=sys.stderr)
        return 1
    print(f"{installer.changed} changed" if installer.changed else "nothing changed", flush=True)
    # A swarm environment: is this node a manager, is the stack file deployable?
    return subprocess.run([f"{facts.PREFIX}/bin/deploy", "setup-check", env], check=False).returncode


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def _all_ok(*commands) -> bool:
    return all(subprocess.run(command, capture_output=True, check=False).returncode == 0 for command in commands)


def _logins(config: str) -> dict:
    """The registries a Docker client config holds a login for."""
    try:
        with open(config) as file:
            auths = json.load(file).get("auths")
    except (OSError, ValueError, AttributeError):
        return {}
    return auths if isinstance(auths, dict) else {}


def _read_bytes(path: str):
    """PATH's bytes, or None when there is no such file."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None


def _restore(path: str, data) -> None:
    """PATH as it was: DATA written back, or the file gone (DATA None)."""
    if data is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))
        return
    with open(path, "wb") as file:
        file.write(data)


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()
