"""HTTPS from an ACME server (`tls.acme`, TLS=acme): certbot obtains the environment's
certificate over HTTP-01 through the proxy and renews it; tls.py installs and serves it.

certbot keeps ENV's lineage under STATE/ENV/acme/ (config, work, logs: root-only, its own, so
the certbot a host may run for itself never renews it without reloading nginx). The proxy
answers the challenges from <app_dir>/acme/ (tls.ACME_WEBROOT, mounted at tls.ACME_MOUNT)
and serves plain HTTP until the first certificate. That is obtained once the proxy answers on
port 80 (`certify`): by server.setup when the proxy runs, else after the next deploy's
switch. `bin/deploy tls-renew ENV` (root; the timer server.setup installs runs it twice a
day) renews it when certbot finds it due (30 days left) and reloads nginx gracefully.

Across a fleet (TLS_ACME_FIRST: where the other hosts reach the first host's proxy) the first
host alone obtains and renews: the others answer the challenges they do not hold by asking it
(a request sent to any host through a load balancer validates), and serve a copy the client
carries over the admin connection at `inv server.setup`: `tls-export` on the first host (the
pair on stdout, obtained first if it has none), `tls-import` on each other host (on stdin,
checked, root-only, served). No host holds a credential to another.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import secrets
import shutil
import subprocess
import sys
import time

from . import env as envs
from . import facts, tls
from .request import Refused, Request
from .result import Result

CERTBOT_TIMEOUT = 300
HOURS = "4,16"  # the renewal timer's hours, twice a day as certbot asks (the minute: the environment's own)


def certbot(env, words: list) -> tuple:
    """certbot's command (argv, environ) for ENV: its own directories, never a prompt; the ACME
    server's CA trusted when TLS_ACME_CA names one."""
    base = tls.acme_dir(env)
    argv = ["certbot", *words, "--non-interactive", "--cert-name", tls.cert_name(env), "--max-log-backups", "30"]
    for kind in ("config", "work", "logs"):
        argv += [f"--{kind}-dir", os.path.join(base, kind)]
    environ = dict(os.environ, **({"REQUESTS_CA_BUNDLE": env["TLS_ACME_CA"]} if env["TLS_ACME_CA"] else {}))
    return argv, environ


def obtain_words(env) -> list:
    """`certbot certonly` over HTTP-01 through the proxy's webroot, for TLS_ACME_DOMAINS (again,
    now, when the lineage came from another directory)."""
    webroot = os.path.join(env.app_dir, tls.ACME_WEBROOT)
    words = ["certonly", "--webroot", f"--webroot-path={webroot}", "--agree-tos", f"--email={env['TLS_ACME_EMAIL']}"]
    words += [f"--domains={','.join(env['TLS_ACME_DOMAINS'].split())}"]
    words += ["--force-renewal" if tls.other_directory(env) else "--keep-until-expiring"]
    return words + ([f"--server={env['TLS_ACME_DIRECTORY']}"] if env["TLS_ACME_DIRECTORY"] else [])


def renew_words(force: bool) -> list:
    """`certbot renew` of the environment's lineage: when it is due (30 days left), or now."""
    return ["renew", "--no-random-sleep-on-renew"] + (["--force-renewal"] if force else [])


def run_certbot(env, words: list) -> tuple:
    """certbot's exit status and its last lines (what failed; it never prints a key)."""
    if not shutil.which("certbot"):
        return 127, "certbot is not installed on this host: apt-get install certbot (Debian's package), then try again"
    argv, environ = certbot(env, words)
    os.makedirs(tls.acme_dir(env), mode=0o700, exist_ok=True)
    try:
        done = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=CERTBOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"certbot did not finish within {CERTBOT_TIMEOUT}s (can this host reach the ACME server?)"
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip() and "debug log" not in line]
    return done.returncode, "\n".join(lines[-8:])


def answers_challenge(env, port: str) -> str:
    """Whether the proxy, at PORT (where its port 80 is published here: [address:]port), serves
    a file of the webroot for the first domain as an ACME server asks for it: '' when it does,
    else what went wrong."""
    webroot = os.path.join(env.app_dir, tls.ACME_WEBROOT)
    folder = os.path.join(webroot, ".well-known", "acme-challenge")
    os.makedirs(folder, mode=0o755, exist_ok=True)
    for part in (".well-known", os.path.join(".well-known", "acme-challenge")):
        os.chmod(os.path.join(webroot, part), 0o755)
    token = secrets.token_urlsafe(24)
    name = f"pushdeploy-check-{token[:8]}"
    with open(os.path.join(folder, name), "w") as file:
        file.write(token)
    os.chmod(os.path.join(folder, name), 0o644)
    address, _, number = port.rpartition(":")
    address = "127.0.0.1" if address in ("", "0.0.0.0", "::", "[::]") else address.strip("[]")
    try:
        connection = http.client.HTTPConnection(address, int(number), timeout=10)
        host = env["TLS_ACME_DOMAINS"].split()[0]
        connection.request("GET", f"/.well-known/acme-challenge/{name}", headers={"Host": host})
        response = connection.getresponse()
        body = response.read(4096).decode(errors="replace")
        connection.close()
    except (OSError, http.client.HTTPException) as error:
        return f"the proxy does not answer on {address}:{number} ({error})"
    finally:
        os.unlink(os.path.join(folder, name))
    if response.status != 200 or body.strip() != token:
        return (
            f"the proxy answered {response.status} for a challenge file, not the file: is `include "
            f"{tls.MOUNT}/*.conf;` in the server block that answers on port 80?"
        )
    return ""


def certify(env, reload, proxy_port, exporting: bool = False) -> int:
    """An ACME environment's certificate obtained when it has none (or one for other names or
    from another directory), once the proxy answers the challenges (PROXY_PORT(): (where its
    port 80 is published here, '') or ('', why not)), then installed and served (RELOAD(env)).
    0 when it serves one or need not; 1, said, when it could not be obtained (the proxy serves what it served). On a
    fleet only EXPORTING (tls-export, for `inv server.setup`) obtains: every host serves it then."""
    if not tls.needs_certificate(env):
        return 0
    domains = ", ".join(env["TLS_ACME_DOMAINS"].split())
    if tls.fleet(env) and not exporting:
        print(
            f"tls: across the fleet, `inv server.setup --env {env.name}` obtains the certificate for {domains}",
            flush=True,
        )
        return 0
    port, why = proxy_port()
    if not port:
        print(f"tls: the certificate for {domains} cannot be obtained yet: {why}", flush=True)
        return 0
    problem = answers_challenge(env, port)
    if problem:
        print(f"tls: cannot obtain a certificate for {domains} yet: {problem}", flush=True)
        return 1
    print(
        f"tls: obtaining a certificate for {domains} from {env['TLS_ACME_DIRECTORY'] or 'certbot default'}", flush=True
    )
    code, said = run_certbot(env, obtain_words(env))
    if code == 0:
        envs.write_text(tls.directory_file(env), env["TLS_ACME_DIRECTORY"] + "\n")
    else:
        print(f"tls: certbot failed (exit {code}); the proxy serves what it served:\n{said}", flush=True)
        print(
            "  every domain's DNS must point at this host and its port 80 reach the proxy; then `inv server.setup`",
            flush=True,
        )
        return 1
    return tls.apply(env, reload)


def renew(env, reload, force: bool) -> int:
    """`bin/deploy tls-renew ENV`: certbot renews the lineage when it is due (or, FORCE, now);
    a new certificate is installed and served at once. The outcome is kept for check. Not while
    a deploy (or anything else) holds the environment's lock: the timer comes again."""
    from .lock import hold

    try:
        lock = hold(env.state_dir, "tls-renew", "certificate renewal", "tls-renew")
    except Refused as busy:
        print(f"tls-renew: skipped, {busy} (the timer tries again within 12 hours)", flush=True)
        return 0
    try:
        return renew_held(env, reload, force)
    finally:
        lock.release()


def renew_held(env, reload, force: bool) -> int:
    code, said = run_certbot(env, renew_words(force))
    outcome = "ok" if code == 0 else f"failed (exit {code})"
    envs.write_text(os.path.join(env.state_dir, "tls-renewal"), f"{int(time.time())} {outcome}\n")
    if code != 0:
        print(f"tls: renewal {outcome}; the proxy serves what it served:\n{said}", flush=True)
        return 1
    print(f"tls: {said.splitlines()[-1] if said else 'certbot renew ran'}", flush=True)
    return tls.apply(env, reload)


def renewal_line(env) -> str:
    """check's words on the last renewal its timer ran."""
    try:
        when, outcome = envs.read_text(os.path.join(env.state_dir, "tls-renewal")).strip().split(" ", 1)
    except (OSError, ValueError):
        return "renewed by its timer (not run yet)"
    return f"last renewal {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(int(when)))}: {outcome}"


# ---------------------------------------------------------------------- a fleet's copies (admin)

PAIR_LIMIT = 1 << 16  # bytes of a certificate chain and key
TRAILER = "pushdeploy-sha256:"  # the last line: the checksum of the pair before it


def export(request: Request) -> Result:
    """`tls-export ENV` (admin, the fleet's first host): the certificate obtained if it has none
    (its proxy answering), then the chain and key on stdout with a checksum line; what happened
    goes to stderr (stdout is the pair, never printed by the client)."""
    from .containers import proxy_port, serve_tls

    env = envs.load_checked(request)
    if not tls.acme(env) or tls.follower(env):
        raise Refused(f"tls-export: {env.name} has no tls.acme, or this is not its first host", 1)
    from .lock import hold

    lock = hold(env.state_dir, "tls-export", "certificate export", "tls-export", "the certificates stay as they are")
    try:
        with stdout_to_stderr():  # stdout is the pair alone: what certify and its commands say goes to stderr
            code = tls.apply(env, serve_tls) or certify(env, serve_tls, lambda: proxy_port(env), exporting=True)
    finally:
        lock.release()
    if code != 0:
        raise Refused("tls-export: no certificate to copy (above: why); the other hosts keep theirs", 1)
    if not os.path.exists(tls.source(env)[0]):  # the proxies answer the challenges from the next deploy
        print("tls: nothing to copy yet: deploy, then run `inv server.setup` again", file=sys.stderr, flush=True)
        return Result(0, {"names": ""})
    cert, key = tls.current_pair(env)
    body = cert.rstrip(b"\n") + b"\n" + key.rstrip(b"\n") + b"\n"
    sys.stdout.buffer.write(body + f"{TRAILER}{hashlib.sha256(body).hexdigest()}\n".encode())
    sys.stdout.flush()
    return Result(0, {"names": " ".join(tls.names(tls.source(env)[0]))})


@contextlib.contextmanager
def stdout_to_stderr():
    """File descriptor 1 (Python's and every command's it starts) onto stderr, then back."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def received_pair(data: bytes) -> tuple:
    """The chain and key tls-export wrote, checked whole: Refused (nothing changed) otherwise."""
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    body += b"\n"
    if last.decode(errors="replace") != TRAILER + hashlib.sha256(body).hexdigest():
        raise Refused("the certificate arrived incomplete or altered (checksum): nothing changed", 1)
    start = body.find(b"-----BEGIN ", body.rfind(b"-----END CERTIFICATE-----"))
    cert, key = body[:start], body[start:]
    if start < 0 or b"PRIVATE KEY-----" not in key or b"-----BEGIN CERTIFICATE-----" not in cert:
        raise Refused("not a certificate chain followed by its key: nothing changed", 1)
    why = tls.pair_problem(cert, key)
    if why:
        raise Refused(f"the certificate and key are not a pair nginx can serve ({why}): nothing changed", 1)
    if tls.days_left(tls.bytes_not_after(cert)) < 0:
        raise Refused("the certificate has ended: nothing changed (renew it on the first host first)", 1)
    return cert, key


def import_pair(request: Request) -> Result:
    """`tls-import ENV` (admin, a fleet's other host): the first host's pair from stdin, kept
    root-only as this host's source, installed and served (nginx reloads gracefully)."""
    from .containers import serve_tls

    env = envs.load_checked(request)
    if not tls.follower(env):
        raise Refused(f"tls-import: {env.name} is not an ACME fleet, or this is its first host (it obtains)", 1)
    data = sys.stdin.buffer.read(PAIR_LIMIT + 1)
    if len(data) > PAIR_LIMIT:
        raise Refused(f"more than {PAIR_LIMIT} bytes: not a certificate and key; nothing changed", 1)
    cert, key = received_pair(data)
    from .lock import hold

    lock = hold(env.state_dir, "tls-import", "certificate copy", "tls-import", "the certificate stays as it is")
    try:
        return installed_copy(env, cert, key, serve_tls)
    finally:
        lock.release()


def installed_copy(env, cert: bytes, key: bytes, serve_tls) -> Result:
    cert_path, key_path = tls.source(env)
    folder = os.path.dirname(cert_path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    for path, content in ((key_path, key), (cert_path, cert)):
        tls.write_private(path, content)
    code = tls.apply(env, serve_tls)
    return Result(code, {"names": " ".join(tls.names(cert_path))})


# ---------------------------------------------------------------------- the timer (bin/install)


def unit(env: str) -> str:
    """The name of ENV's renewal timer: its systemd units, or its cron.d file."""
    return f"pushdeploy-tls-{env}"


def command(env: str) -> str:
    return f"{facts.PREFIX}/bin/deploy tls-renew {env}"


def minute(env: str) -> int:
    """The environment's own minute of the hour (not every server's at once at the ACME server)."""
    return int(hashlib.sha256(env.encode()).hexdigest(), 16) % 60


def cron_text(env: str) -> str:
    return (
        f"# Managed by pushdeploy (inv server.setup): renews {env}'s ACME certificate when due, twice a day.\n"
        "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{minute(env)} {HOURS} * * * root {command(env)} >{facts.STATE}/{env}/tls-renewal.log 2>&1\n"
    )


def service_text(env: str) -> str:
    return f"""# Managed by pushdeploy (inv server.setup): renews {env}'s ACME certificate when due.
[Unit]
Description=pushdeploy: renew {env}'s ACME certificate when due, reload its proxy
After=network-online.target docker.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={command(env)}
"""


def timer_text(env: str) -> str:
    return f"""# Managed by pushdeploy (inv server.setup): renews {env}'s ACME certificate, twice a day.
[Unit]
Description=pushdeploy: renew {env}'s ACME certificate, twice a day

[Timer]
OnCalendar=*-*-* {HOURS}:{minute(env):02d}:00
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
"""
