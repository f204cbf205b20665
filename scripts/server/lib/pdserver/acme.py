"""HTTPS from an ACME server (`tls.acme`, TLS=acme): certbot obtains the environment's
certificate over HTTP-01 through the proxy and renews it; tls.py installs and serves it.

certbot keeps ENV's lineage under STATE/ENV/acme/ (config, work, logs: root-only, its own, so
the certbot a host may run for itself never renews it without reloading nginx). The proxy
answers the challenges from <app_dir>/acme/ (tls.ACME_WEBROOT, mounted at tls.ACME_MOUNT)
and serves plain HTTP until the first certificate. That is obtained once the proxy answers on
port 80 (`certify`): by server.setup when the proxy runs, else after the next deploy's
switch. `bin/deploy tls-renew ENV` (root; the timer server.setup installs runs it twice a
day) renews it when certbot finds it due (30 days left) and reloads nginx gracefully.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import subprocess
import time

from . import env as envs
from . import facts, tls

CERTBOT_TIMEOUT = 300
TIMES = "17 4,16"  # the renewal timer's minute and hours (cron), twice a day as certbot asks


def certbot(env, words: list) -> tuple:
    """certbot's command (argv, environ) for ENV: its own directories, never a prompt; the ACME
    server's CA trusted when TLS_ACME_CA names one."""
    base = tls.acme_dir(env)
    argv = ["certbot", *words, "--non-interactive", "--cert-name", tls.cert_name(env)]
    for kind in ("config", "work", "logs"):
        argv += [f"--{kind}-dir", os.path.join(base, kind)]
    environ = dict(os.environ, **({"REQUESTS_CA_BUNDLE": env["TLS_ACME_CA"]} if env["TLS_ACME_CA"] else {}))
    return argv, environ


def obtain_words(env) -> list:
    """`certbot certonly` over HTTP-01 through the proxy's webroot, for TLS_ACME_DOMAINS."""
    words = ["certonly", "--webroot", "-w", os.path.join(env.app_dir, tls.ACME_WEBROOT), "--agree-tos"]
    words += ["-m", env["TLS_ACME_EMAIL"], "--keep-until-expiring"]
    words += [word for name in env["TLS_ACME_DOMAINS"].split() for word in ("-d", name)]
    return words + (["--server", env["TLS_ACME_DIRECTORY"]] if env["TLS_ACME_DIRECTORY"] else [])


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


def certify(env, reload, proxy_port) -> int:
    """An ACME environment's certificate obtained when it has none (or one for other names),
    once the proxy answers the challenges (PROXY_PORT(): where its port 80 is published here,
    '' while it does not run with ACME's webroot), then installed and served (RELOAD(env)). 0 when it serves one
    or need not; 1, said, when it could not be obtained (the proxy serves what it served)."""
    if not tls.needs_certificate(env):
        return 0
    domains = ", ".join(env["TLS_ACME_DOMAINS"].split())
    port = proxy_port()
    if not port:
        print(
            f"tls: the certificate for {domains} is obtained once the proxy serves ACME's challenges (next deploy)",
            flush=True,
        )
        return 0
    problem = answers_challenge(env, port)
    if problem:
        print(f"tls: cannot obtain a certificate for {domains} yet: {problem}", flush=True)
        return 1
    print(
        f"tls: obtaining a certificate for {domains} from {env['TLS_ACME_DIRECTORY'] or 'certbot default'}", flush=True
    )
    code, said = run_certbot(env, obtain_words(env))
    if code != 0:
        print(f"tls: certbot failed (exit {code}); the proxy serves what it served:\n{said}", flush=True)
        print(
            "  every domain's DNS must point at this host and its port 80 reach the proxy; then `inv server.setup`",
            flush=True,
        )
        return 1
    return tls.apply(env, reload)


def renew(env, reload, force: bool) -> int:
    """`bin/deploy tls-renew ENV`: certbot renews the lineage when it is due (or, FORCE, now);
    a new certificate is installed and served at once. The outcome is kept for check."""
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


# ---------------------------------------------------------------------- the timer (bin/install)


def unit(env: str) -> str:
    """The name of ENV's renewal timer: its systemd units, or its cron.d file."""
    return f"pushdeploy-tls-{env}"


def command(env: str) -> str:
    return f"{facts.PREFIX}/bin/deploy tls-renew {env}"


def cron_text(env: str) -> str:
    return (
        f"# Managed by pushdeploy (inv server.setup): renews {env}'s ACME certificate when due, twice a day.\n"
        "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{TIMES} * * * root {command(env)} >>{facts.STATE}/{env}/tls-renewal.log 2>&1\n"
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
    minute, hours = TIMES.split()
    return f"""# Managed by pushdeploy (inv server.setup): renews {env}'s ACME certificate, twice a day.
[Unit]
Description=pushdeploy: renew {env}'s ACME certificate, twice a day

[Timer]
OnCalendar=*-*-* {hours}:{minute}:00
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
"""
