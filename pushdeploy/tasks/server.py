"""server.*: install and inspect the server side (over the admin connection)."""

from __future__ import annotations

import os
import secrets
import sys

from invoke import Collection, task
from invoke.exceptions import Exit

from pushdeploy import local, notify, plan, protocol, registry, tls
from pushdeploy.output import Collector, say
from pushdeploy.settings import dotenv_values_for
from pushdeploy.tasks.common import admin_connect, done, expected, fail_on_errors, load_settings, require_pinned

ENV_HELP = "The environment (staging, production, ...)."


@task(
    help={
        "env": ENV_HELP,
        "public_key": "The deploy account's unnamed public key(s), every verb everywhere: a .pub file or the key line (default: DEPLOY_CI_PUBLIC_KEY). Named keys: deploy.keys in invoke.yaml.",
    }
)
def setup(c, env="staging", public_key=None):
    """Install or upgrade the server side of an environment, on every host (idempotent).

    Over the admin connection (DEPLOY_ADMIN_USER: root or a user with
    passwordless sudo), this creates the deploy account (key login only), pushes
    the root-owned bin/deploy and entrypoint, a sudoers file allowing only
    bin/deploy (checked with visudo), authorized_keys forcing every key to the
    entrypoint (each named key of deploy.keys with its name, held to its scope
    by /etc/pushdeploy/keys.json), /etc/pushdeploy/ENV.conf, and the app directory (compose files,
    nginx config, .env owned by root with mode 0600). With `pull:` set for the
    environment it also installs the pull agent (a systemd timer, or a cron
    entry where systemd is not PID 1); without it, removes one. The webhooks in
    DEPLOY_<ENV>_WEBHOOKS (.env) go to a root-only file, never printed (empty:
    removed; unset: kept). With `registry:` set, root's Docker logs in to that
    registry on every host with DEPLOY_<ENV>_REGISTRY_PASSWORD or
    DEPLOY_REGISTRY_PASSWORD (--password-stdin, /etc/pushdeploy/ENV.docker, 0600;
    unset: the hosts keep their login; set again: rotated), before anything
    else changes; a login the registry refuses stops the setup there. With
    `tls:` set, the certificate and key (files on each host) are checked and
    installed for the proxy, which reloads gracefully if it runs (docs/https.md);
    one that cannot be served stops the setup. With `tls: {acme: ...}` certbot
    obtains one once the proxy answers ACME's challenges, a timer renews it,
    and on several hosts the first obtains and the others get a copy. A second
    run changes nothing and says so. For
    `engine: swarm` it then checks the host is a swarm
    manager and the stack file deploys safely (`docker stack config` accepts
    it; each service tagged with the version updates start-first behind a
    health check, on an attachable overlay network), and says what is missing.
    """
    from pushdeploy import remote

    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        keys = local.public_keys(public_key or settings.access.ci_public_key)
        values = dotenv_values_for(os.environ)[0]
        named_keys = local.named_public_keys(settings, values)
        app_files = local.app_files(settings, environment)
        problems = plan.proxy_config_problems(environment, app_files)
        if problems:
            raise plan.BadRequest("the proxy configuration cannot switch without downtime:\n  " + "\n  ".join(problems))
        https = "" if environment.review_template else tls.include_problem(environment.tls, app_files)
        if https:
            raise plan.BadRequest(https)
        try:
            hooks = notify.for_environment(values, env)
        except notify.WebhookError as error:
            raise plan.BadRequest(str(error)) from None
        webhooks = None if hooks is None else notify.server_file(hooks)
        try:
            password = registry.password(values, env) if environment.registry_server else None
        except registry.RegistryError as error:
            raise plan.BadRequest(str(error)) from None
        archive = plan.bundle(
            environment,
            protocol.server_side(),
            app_files,
            local.server_dotenv(settings, environment),
            keys,
            webhooks,
            settings.keys,
            named_keys,
            password,
            local.registry_ca(settings, environment),
        ).tar()
        require_pinned(settings, environment)
        admins = sorted({settings.access.admin_for(host) for host in environment.hosts})
        say(f"server.setup of {env} on {len(environment.hosts)} host(s) as {', '.join(admins)}")

        def work(host, out):
            name = f".pushdeploy-bundle-{secrets.token_hex(6)}.tar"
            out.line(f"sending the server side and settings ({max(1, len(archive) // 1024)} KiB), then installing")
            with admin_connect(settings, host) as connection:
                sftp = connection.sftp()
                with sftp.open(name, "wx") as upload:  # the bundle holds the server's .env: owner only
                    upload.chmod(0o600)
                    upload.write(archive)
                as_root, position = settings.access.as_root(host), environment.hosts.index(host) + 1
                command = plan.install_command(settings, environment, name, as_root, position)
                return remote.run(connection, command, out)

        results = remote.on_hosts(environment.hosts, work, label=lambda h: f"{env} {h}")
        remote.summary(results, remote.last_line, label=lambda h: f"{env} {h}")
        if environment.tls.first and all(result.ok for result in results):  # a failed copy fails the setup
            results += [result for result in copy_certificate(settings, environment) if not result.ok]
    done(results, f"server.setup of {env}")


def copy_certificate(settings, environment) -> list:
    """An ACME fleet's certificate (docs/https.md): the first host obtains it if it has none
    (`tls-export`: its proxy must answer on port 80, the others forwarding the challenges it
    holds), the pair comes back in memory and goes to every other host (`tls-import`), which
    checks and serves it. Never printed, never written here."""
    from pushdeploy import remote

    env = environment.name
    kept = {}

    def export(host, out):
        out.line("obtaining the certificate if due, then copying it to the other hosts")
        command = plan.admin_command(
            f"{protocol.DEPLOY_BIN} {protocol.command('tls-export', env)}", settings.access.as_root(host)
        )
        with admin_connect(settings, host) as connection:
            code, kept["pair"] = remote.capture(connection, command, out, limit=1 << 16)
        return code

    results = remote.on_hosts(environment.hosts[:1], export, label=lambda h: f"{env} {h}")
    if not results[0].ok or not kept.get("pair"):  # failed, or nothing obtained yet (it said why)
        return results

    def import_(host, out):
        command = plan.admin_command(
            f"{protocol.DEPLOY_BIN} {protocol.command('tls-import', env)}", settings.access.as_root(host)
        )
        with admin_connect(settings, host) as connection:
            return remote.run(connection, command, out, data=kept["pair"])

    return results + remote.on_hosts(environment.hosts[1:], import_, label=lambda h: f"{env} {h}")


@task(help={"env": ENV_HELP})
def certificate(c, env="staging"):
    """Copy an ACME fleet's certificate from its first host to the others (docs/https.md).

    With `tls: {acme: ...}` on several hosts, the first host alone obtains and
    renews the certificate (its timer, twice a day); the others serve a copy
    that `inv server.setup` carries over the admin connection. This task does
    only that part: the first host obtains one if it has none, and every other
    host checks the copy it is given and serves it. Run it after a renewal, e.g. weekly
    from CI (certbot renews 30 days before the end).
    """
    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        if not environment.tls.first:
            raise plan.BadRequest(f"{env} has no tls.acme on several hosts: each host's own certificate serves")
        say(f"server.certificate of {env} on {len(environment.hosts)} host(s)")
        results = copy_certificate(settings, environment)
    done(results, f"server.certificate of {env}")


@task(help={"env": ENV_HELP})
def check(c, env="staging"):
    """Report per host: server side current, docker/compose versions, disk, deployed version, HTTPS certificate."""
    from pushdeploy import remote

    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        want_server, want_settings = expected(settings, environment).split(".")

        def work(host, out):
            command = plan.admin_command(
                f"{protocol.DEPLOY_BIN} check {environment.name}", settings.access.as_root(host)
            )
            quiet = Collector()
            with admin_connect(settings, host) as connection:
                code = remote.run(connection, f"test -x {protocol.DEPLOY_BIN} && {command}", quiet)
            facts = quiet.result
            if code == 0 and "server_side" not in facts:  # a server side from before results as data
                out.line(f"server side: installed, OUT OF DATE (run `inv server.setup --env {env}`)")
                return protocol.EXIT_OUTDATED
            if code != 0 or "server_side" not in facts:
                for line in quiet.lines:
                    out.line(line)
                out.line(
                    f"server side: NOT INSTALLED for {env}, or the admin cannot run it (run `inv server.setup --env {env}`)"
                )
                return code or 1
            current = facts["server_side"] == want_server and facts["settings"] == want_settings
            out.line(
                "server side: "
                + ("installed, current" if current else f"installed, OUT OF DATE (run `inv server.setup --env {env}`)")
            )
            for key in ("version", "docker", "compose", "disk_free_app", "disk_free_docker", "pull"):
                out.line(f"{key.replace('_', ' ')}: {facts.get(key, '?')}")
            if "tls" in facts:  # tls: the certificate the proxy serves, and a warning within 14 days of its end
                out.line(f"https: {facts['tls']}")
            if "tls_warning" in facts:
                out.line(f"WARNING: {facts['tls_warning']}")
            return 0 if current else protocol.EXIT_OUTDATED

        results = remote.on_hosts(environment.hosts, work, label=lambda h: f"{env} {h}", grouped=True)
    done(results, f"server.check of {env}")


@task(help={"env": ENV_HELP, "yes": "Pin without asking (only after checking the fingerprint out of band)."})
def trust(c, env="staging", yes=False):
    """Pin the host keys of an environment's hosts and jump hosts (shows each fingerprint first).

    Appends `[host]:port type key` lines to DEPLOY_KNOWN_HOSTS_FILE (default
    ~/.ssh/known_hosts). Hosts already pinned are left alone; a host whose key
    differs from the pinned one is reported and never re-pinned here. A host
    behind jump hosts (jump:, or ProxyJump in the ssh config) is read through
    them once they are pinned, each jump host first.
    """
    import dataclasses

    from pushdeploy import hostkeys, remote

    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        pinned = hostkeys.load(settings.access)
        path = hostkeys.known_hosts_path(settings.access)
        failed, hops = 0, {}  # (hostname, port) of each jump host read: pinned or not

        def trust_one(host, through: tuple) -> bool:
            """HOST's key, read directly or through the jump hosts THROUGH (pinned by now)."""
            label = f"{env} {host}" + (f" (jump host {through[-1]})" if through else "")
            try:
                sock = None
                if through:
                    sock = remote.stream(
                        dataclasses.replace(host, via=through), "", settings.access.ssh_key, settings.access, pinned
                    )
                key = hostkeys.scan(host, sock=sock)
            except Exception as error:  # socket errors, paramiko's own, RemoteError
                say(f"{label} | cannot read its host key: {error}", sys.stderr)
                return False
            entry = hostkeys.host_entry(host)
            known = pinned.lookup(entry) or {}
            if known:
                same = known.get(key.get_name()) == key
                say(
                    f"{label} | {'already pinned' if same else 'CHANGED: the pinned key differs, not pinning'}: {hostkeys.fingerprint(key)}"
                )
                return same
            say(f"{label} | offers {key.get_name()} {hostkeys.fingerprint(key)}")
            if not yes and (not sys.stdin.isatty() or input("pin this key? [y/N] ").strip().lower() != "y"):
                say(f"{label} | not pinned (pass --yes once you have checked the fingerprint)")
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as stream:
                stream.write(hostkeys.known_hosts_line(host, key) + "\n")
            pinned.add(entry, key.get_name(), key)
            say(f"{label} | pinned in {path}")
            return True

        for host in environment.hosts:
            # Its jump hosts first, each once, each reached through those before it.
            for number, hop in enumerate(host.via):
                if (hop.hostname, hop.port) not in hops:
                    hops[hop.hostname, hop.port] = trust_one(dataclasses.replace(hop, via=()), host.via[:number])
            if not all(hops[hop.hostname, hop.port] for hop in host.via):
                say(f"{env} {host} | not read: a jump host before it is not pinned", sys.stderr)
                failed += 1
                continue
            failed += not trust_one(host, host.via)
    if failed:
        from invoke.exceptions import Exit

        raise Exit(code=1)


@task(
    help={
        "env": "The environment to remove (required: there is no default for this one).",
        "volumes": "Remove its volumes (the database's data) and its backups too.",
        "yes": "Do not ask: for scripts (without a terminal it is required).",
    }
)
def teardown(c, env, volumes=False, yes=False):
    """Remove an environment from its hosts: containers, files, settings, state.

    Over the admin connection, on every host of ENV: its containers and networks
    (compose down, or the swarm stack), its pull agent, APP_DIR (compose files, nginx
    config, the .env with its secrets), /etc/pushdeploy/ENV.conf and ENV.webhooks,
    its history and logs. Its volumes and database backups stay unless --volumes.
    Refused while a deploy of ENV runs (exit 75). Once no environment is left on a
    host, the deploy account's sudo rule goes too. Asks for the environment's name
    first unless --yes.
    """
    from pushdeploy import remote

    with fail_on_errors():
        settings = load_settings(c)
        environment = settings.environment(env)
        by, _ = plan.actor(os.environ, local.git_user(settings.root))
        request = protocol.command("teardown", env, by=by, volumes=bool(volumes))
        require_pinned(settings, environment)
    data = " and its volumes and backups (the database's data)" if volumes else " (volumes and backups kept)"
    say(f"server.teardown removes {env} from {', '.join(str(h) for h in environment.hosts)}{data}")
    _confirm(env, yes)

    def work(host, out):
        command = plan.admin_command(f"{protocol.DEPLOY_BIN} {request}", settings.access.as_root(host))
        with admin_connect(settings, host) as connection:
            return remote.run(connection, command, out)

    results = remote.on_hosts(environment.hosts, work, label=lambda h: f"{env} {h}")
    done(results, f"server.teardown of {env}")


def _confirm(env: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise Exit(f"error: server.teardown removes {env}: pass --yes to confirm (no terminal to ask on)", code=2)
    if input(f"Type {env} to remove it: ").strip() != env:
        raise Exit("server.teardown: not confirmed, nothing changed", code=1)


namespace = Collection("server", setup, check, trust, teardown, certificate)
