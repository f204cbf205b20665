"""HTTPS at the proxy (`tls:`): the certificate and key the environment names (files on the
server, root-only) or obtains from an ACME server (certbot, `TLS=acme`), installed where the
proxy reads them, the nginx lines that serve them, and a graceful reload when they change.

<app_dir>/tls/, root-only, mounted read-only into the proxy at /etc/nginx/pushdeploy/:
  cert.pem, key.pem   copies of TLS_CERTIFICATE (the chain) and TLS_KEY
  tls.conf            lines for the app's server block: listen 443 ssl, the files, the
                      redirect of plain HTTP, HSTS
  compose.yml         the proxy's extra compose file: TLS_PUBLISH to its port 443, tls/ mounted
With TLS=acme, certbot keeps the environment's certificate under STATE/ENV/acme/ (its own
config, so no other certbot renews it without reloading nginx); <app_dir>/acme/ is the
webroot the proxy answers ACME's challenges from (mounted at ACME_MOUNT). Until the first
certificate is obtained the proxy serves plain HTTP and the challenges only. It is obtained
once the proxy answers on port 80: by the setup when the proxy runs, else at the end of the
next deploy (`certify`); `bin/deploy tls-renew ENV` (root, twice a day by a timer the setup
installs) renews it when it is due and reloads nginx.
The app's nginx server block says `include /etc/nginx/pushdeploy/*.conf;` (nothing matches
without tls:). A deploy installs them in its preflight (a bad pair fails it before anything
changes) and reloads nginx at its switch; `bin/deploy tls-reload ENV` (root, e.g. a renewal's
hook) and server.setup do it at once. Pure but for install, apply and expiry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import stat
import tempfile
import time

from . import env as envs

MOUNT = "/etc/nginx/pushdeploy"  # where the proxy sees <app_dir>/tls
DIR = "tls"  # in the app directory
COMPOSE_FILE = f"{DIR}/compose.yml"
FILES = ("cert.pem", "key.pem", "tls.conf", "compose.yml")
WARN_DAYS = 14  # server.check warns this close to a certificate's end
ACME_CHALLENGE = r"^/\.well-known/acme-challenge/"  # never redirected: an ACME server asks over plain HTTP
ACME_WEBROOT = "acme"  # in the app directory: the challenges' files, world-readable (nginx's workers read them)
ACME_MOUNT = "/var/www/pushdeploy-acme"  # where the proxy sees it
WEBROOT_MARK = ".pushdeploy-webroot"  # in the webroot: pushdeploy made it (and removes it with tls.acme)


class TlsError(Exception):
    """The environment's certificate cannot be served: the message says what to do."""


def enabled(env) -> bool:
    return env["TLS"] in ("files", "acme")


def acme(env) -> bool:
    return env["TLS"] == "acme"


def acme_dir(env) -> str:
    """certbot's config, work and logs directories of ENV (root-only, in its state)."""
    return os.path.join(env.state_dir, "acme")


def cert_name(env) -> str:
    return f"pushdeploy-{env.name}"


def fleet(env) -> bool:
    """An ACME environment of several hosts: the first obtains, `inv server.setup` copies
    (TLS_ACME_FIRST: where the others reach the first host's proxy on plain HTTP)."""
    return acme(env) and bool(env["TLS_ACME_FIRST"])


def follower(env) -> bool:
    """This host serves a copy of the fleet's certificate, which the first host obtains."""
    from .roles import position

    return fleet(env) and position(env.name) > 1


def source(env) -> tuple:
    """The certificate chain and key the environment serves: its files, certbot's lineage, or
    on a fleet's other hosts the copy of the first host's (tls-import)."""
    if follower(env):
        copy = os.path.join(acme_dir(env), "copy")
        return os.path.join(copy, "fullchain.pem"), os.path.join(copy, "privkey.pem")
    if acme(env):
        live = os.path.join(acme_dir(env), "config", "live", cert_name(env))
        return os.path.join(live, "fullchain.pem"), os.path.join(live, "privkey.pem")
    return env["TLS_CERTIFICATE"], env["TLS_KEY"]


def names(path: str) -> list:
    """The DNS names the certificate at PATH covers (its subjectAltName)."""
    decoded = ssl._ssl._test_decode_cert(path)
    return sorted(value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS")


def needs_certificate(env) -> bool:
    """TLS=acme and no certificate obtained yet, or one for other names than TLS_ACME_DOMAINS, or
    from another ACME directory than TLS_ACME_DIRECTORY (never on a fleet's other hosts: the
    first host obtains)."""
    if not acme(env) or follower(env):
        return False
    try:
        named = names(source(env)[0]) != sorted(env["TLS_ACME_DOMAINS"].split())
    except (OSError, ValueError, ssl.SSLError):
        return True
    return named or other_directory(env)


def other_directory(env) -> bool:
    """The lineage was obtained from another ACME directory than the one set now (e.g. a staging
    server's, untrusted): certbot renews from the one it has, so it is obtained again."""
    try:
        return envs.read_text(directory_file(env)).strip() != env["TLS_ACME_DIRECTORY"]
    except OSError:
        return False  # obtained before pushdeploy noted it


def directory_file(env) -> str:
    """The ACME directory the lineage came from ('' for certbot's default), noted at obtaining."""
    return os.path.join(acme_dir(env), "directory")


def serving(env) -> bool:
    """The proxy is given a certificate to serve (an ACME environment's: once obtained)."""
    return enabled(env) and os.path.isfile(os.path.join(folder(env), "cert.pem"))


def compose_files(env) -> list:
    """The compose files of every compose command: the environment's, then the proxy's TLS file
    once it is installed (a setup whose certificate was refused leaves the proxy as it was, and
    every other command working; the deploy's preflight refuses it again)."""
    extra = extra_files(env) if env["ENGINE"] == "compose" else []  # a swarm's proxy: manager_compose's
    return env["COMPOSE_FILES"].split() + extra


def extra_files(env) -> list:
    """The proxy's TLS compose file, once installed ([] without)."""
    installed = enabled(env) and os.path.isfile(os.path.join(env.app_dir, COMPOSE_FILE))
    return [COMPOSE_FILE] if installed else []


def compose_digest(env) -> str:
    """The proxy's TLS compose file as it is now ('' without one): what the proxy container was
    made with is recorded beside it, and a change (tls: on or off, another publish) recreates it."""
    try:
        with open(os.path.join(env.app_dir, COMPOSE_FILE), "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()[:16] if enabled(env) else ""
    except FileNotFoundError:
        return ""


def snippet(hsts: int, redirect: bool, challenges: bool = False, serving: bool = True, first: str = "") -> str:
    """tls.conf: the lines the app's server block includes. Plain HTTP redirects to HTTPS
    (308 keeps the method) but for ACME's challenges; HSTS only on HTTPS answers. CHALLENGES:
    ACME's are answered from the webroot, and, with FIRST (a fleet's other hosts: the first
    host's address:port), those not found here by the first host, which obtains; not SERVING
    (no certificate yet): nothing else."""
    lines = ["# Written by pushdeploy (tls: in invoke.yaml): included by the app's server block."]
    if challenges:
        missing = "@pushdeploy_acme_first" if first else "=404"
        lines.append(
            f"location ^~ /.well-known/acme-challenge/ {{ root {ACME_MOUNT}; default_type text/plain; "
            f"try_files $uri {missing}; }}"
        )
    if challenges and first:
        lines.append(  # once only: a request already passed on is never passed on again (no loop)
            "location @pushdeploy_acme_first { if ($http_x_pushdeploy_acme) { return 404; } "
            f"proxy_pass http://{first}; proxy_set_header Host $host; proxy_set_header X-Pushdeploy-Acme 1; "
            "proxy_connect_timeout 5s; }"
        )
    if not serving:
        return "\n".join(lines + ["# No certificate yet: plain HTTP until ACME's is obtained."]) + "\n"
    lines += [
        "listen 443 ssl;",
        f"ssl_certificate {MOUNT}/cert.pem;",
        f"ssl_certificate_key {MOUNT}/key.pem;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_prefer_server_ciphers off;",
        "ssl_session_cache shared:pushdeploy_tls:10m;",
        "ssl_session_timeout 1d;",
        "ssl_session_tickets off;",
    ]
    if redirect:
        lines += [
            "set $pushdeploy_redirect $scheme;",
            f'if ($uri ~ "{ACME_CHALLENGE}") {{ set $pushdeploy_redirect acme; }}',
            "if ($pushdeploy_redirect = http) { return 308 https://$host$request_uri; }",
        ]
    if hsts:
        lines += [
            'set $pushdeploy_hsts "";',
            f'if ($scheme = https) {{ set $pushdeploy_hsts "max-age={hsts}"; }}',
            "add_header Strict-Transport-Security $pushdeploy_hsts always;",
        ]
    return "\n".join(lines) + "\n"


def compose_text(proxy: str, publish: str, challenges: bool = False) -> str:
    """compose.yml: the proxy publishes PUBLISH ([address:]port) to its port 443 and reads tls/
    (and, with CHALLENGES, ACME's webroot)."""
    webroot = f"      - ./{ACME_WEBROOT}:{ACME_MOUNT}:ro\n" if challenges else ""
    return (
        "# Written by pushdeploy (tls: in invoke.yaml): the proxy serves HTTPS.\n"
        "services:\n"
        f"  {proxy}:\n"
        "    ports:\n"
        f'      - "{publish}:443"\n'
        "    volumes:\n"
        f"      - ./{DIR}:{MOUNT}:ro\n" + webroot
    )


def wanted(env, cert: bytes, key: bytes) -> dict:
    """The files of <app_dir>/tls/ for ENV with this pair (name -> bytes); without one (b''):
    an ACME environment's before its first certificate, serving plain HTTP and the challenges."""
    serving = bool(cert)
    files = {"cert.pem": cert, "key.pem": key} if serving else {}
    first = env["TLS_ACME_FIRST"] if follower(env) else ""
    files["tls.conf"] = snippet(int(env["TLS_HSTS"]), env["TLS_REDIRECT"] == "yes", acme(env), serving, first).encode()
    files["compose.yml"] = compose_text(env["PROXY_SERVICE"], env["TLS_PUBLISH"], acme(env)).encode()
    return files


def read_pair(cert_path: str, key_path: str) -> tuple[bytes, bytes]:
    """The certificate chain and key at these server paths, checked: regular files, the key
    readable by root alone, PEM, a pair that matches. TlsError says what is wrong."""
    for what, path in (("certificate", cert_path), ("key", key_path)):
        try:
            info = os.stat(path)
        except OSError as error:
            raise TlsError(
                f"the {what} {path} cannot be read ({error.strerror}): put it there, or fix tls.{what}"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise TlsError(f"the {what} {path} is not a file")
    info = os.stat(key_path)
    if info.st_mode & 0o077 or info.st_uid != 0:
        raise TlsError(f"the key {key_path} must be root's alone: chown root {key_path} && chmod 600 {key_path}")
    with open(cert_path, "rb") as file:
        cert = file.read()
    with open(key_path, "rb") as file:
        key = file.read()
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise TlsError(f"{cert_path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    if b"PRIVATE KEY-----" not in key:
        raise TlsError(f"{key_path} holds no PEM private key")
    if b"ENCRYPTED" in key:
        raise TlsError(
            f"{key_path} is encrypted: nginx reads keys without a passphrase (openssl pkey -in KEY -out NEW)"
        )
    why = pair_problem(cert, key)
    if why:
        raise TlsError(f"{cert_path} and {key_path} are not a pair nginx can serve ({why})")
    return cert, key


def pair_problem(cert: bytes, key: bytes) -> str:
    """Why these very bytes (not the files again: a renewal may swap them meanwhile) are not a
    certificate chain and its unencrypted key ('' when they are)."""
    with tempfile.TemporaryDirectory(prefix="pushdeploy-tls-") as folder:
        for name, data in (("cert.pem", cert), ("key.pem", key)):
            fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem"), password=lambda: b""
            )
        except ssl.SSLError as error:
            return str(error.reason or error)
    return ""


def bytes_not_after(cert: bytes) -> float:
    """When the first certificate of these PEM bytes ends (seconds since the epoch)."""
    with tempfile.NamedTemporaryFile(prefix="pushdeploy-cert-") as file:
        file.write(cert)
        file.flush()
        return not_after(file.name)


def not_after(path: str) -> float:
    """When the certificate at PATH (its first, the server's own) ends: seconds since the epoch."""
    decoded = ssl._ssl._test_decode_cert(path)  # the standard library's own PEM reader
    return ssl.cert_time_to_seconds(decoded["notAfter"])


def folder(env) -> str:
    return os.path.join(env.app_dir, DIR)


def install(env) -> bool:
    """<app_dir>/tls/ as the environment's settings say (without tls: gone): whether it changed.
    Raises TlsError, changing nothing, when the certificate cannot be served."""
    where = folder(env)
    webroot = os.path.join(env.app_dir, ACME_WEBROOT)
    if not acme(env) and os.path.isfile(os.path.join(webroot, WEBROOT_MARK)):  # ours alone, never an app's
        shutil.rmtree(webroot)
    if not enabled(env):
        present = [name for name in FILES if os.path.exists(os.path.join(where, name))]
        for name in present:
            os.unlink(os.path.join(where, name))
        return bool(present)
    files = wanted(env, *current_pair(env))
    if acme(env):
        os.makedirs(webroot, mode=0o755, exist_ok=True)
        os.chmod(webroot, 0o755)
        if not os.path.exists(os.path.join(webroot, WEBROOT_MARK)):
            envs.write_text(os.path.join(webroot, WEBROOT_MARK), "ACME's challenges (pushdeploy, tls.acme)\n")
    os.makedirs(where, mode=0o700, exist_ok=True)
    os.chmod(where, 0o700)
    changed = False
    for name in set(FILES) - set(files):  # an ACME environment's certificate, before it has one
        if os.path.exists(os.path.join(where, name)):
            os.unlink(os.path.join(where, name))
            changed = True
    for name, data in files.items():
        path = os.path.join(where, name)
        try:
            with open(path, "rb") as file:
                if file.read() == data and os.stat(path).st_mode & 0o777 == 0o600:
                    continue
        except FileNotFoundError:
            pass
        write_private(path, data)
        changed = True
    return changed


def write_private(path: str, data: bytes) -> None:
    """PATH holds DATA, root's alone (0600), whole or not at all (a temp file, then a rename)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def current_pair(env) -> tuple:
    """The pair the environment serves, read and checked; (b'', b'') for an ACME environment
    without a certificate yet. certbot swaps a renewed lineage's links one by one: a pair read
    in between is read again."""
    cert_path, key_path = source(env)
    if acme(env) and not os.path.exists(cert_path):
        return b"", b""
    try:
        return read_pair(cert_path, key_path)
    except TlsError:
        if not acme(env):
            raise
        time.sleep(1)
        return read_pair(cert_path, key_path)


def digest(env) -> str:
    """What the proxy serves of tls/ (its files' hash; '' without tls:): the switch reloads
    nginx when it is not what it last loaded."""
    if not enabled(env):
        return ""
    sha = hashlib.sha256()
    for name in FILES:
        try:
            with open(os.path.join(folder(env), name), "rb") as file:
                sha.update(name.encode() + b"\0" + file.read() + b"\0")
        except FileNotFoundError:
            sha.update(name.encode() + b"\0-\0")
    return sha.hexdigest()[:16]


def days_left(ends: float, now: float | None = None) -> int:
    """Whole days from NOW (default: this moment) to ENDS; negative once it has passed."""
    return int((ends - (time.time() if now is None else now)) // 86400)


def served(env) -> bool:
    """What tls/ holds is what the proxy last loaded (STATE/tls-config, written by record_served)."""
    state = os.path.join(env.state_dir, "tls-config")
    return (envs.read_text(state).strip() if os.path.isfile(state) else "") == digest(env)


def record_served(env) -> None:
    """The proxy has loaded what tls/ holds now."""
    envs.write_text(os.path.join(env.state_dir, "tls-config"), digest(env) + "\n")


def expiry(env, now: float | None = None) -> dict:
    """server.check's facts: the served certificate's end, the days left, a warning within
    WARN_DAYS of it ({} without tls:)."""
    if not enabled(env):
        return {}
    path = os.path.join(folder(env), "cert.pem")
    if env["REVIEW_TEMPLATE"] == "yes":  # its review front's (front.py)
        path = os.path.join(env.state_dir, "front-tls", "cert.pem")
    origin = f"ACME for {', '.join(env['TLS_ACME_DOMAINS'].split())}" if acme(env) else env["TLS_CERTIFICATE"]
    try:
        ends = not_after(path)
    except (OSError, ValueError, ssl.SSLError):
        if fleet(env):
            return {
                "tls": f"no certificate yet ({origin}): plain HTTP until `inv server.setup --env {env.name}` has the "
                "first host obtain it (its proxy answering on port 80) and copies it to every host"
            }
        if acme(env):
            return {
                "tls": f"no certificate obtained yet ({origin}): plain HTTP until the proxy answers ACME's "
                f"challenge on port 80; then `inv server.setup --env {env.name}` or the next deploy obtains it"
            }
        return {"tls": f"no certificate installed at {path}: run `inv server.setup --env {env.name}`"}
    if acme(env):  # the names it covers (new ones wanted come with the next setup or deploy)
        origin = f"ACME for {', '.join(names(path))}"
    left = days_left(ends, now)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ends))
    ended = "ENDED" if left < 0 else "ends"
    from .acme import renewal_line

    renewal = f"; {renewal_line(env)}" if acme(env) and not follower(env) else ""
    renewal = "; a copy of the first host's, renewed there, copied by `inv server.setup`" if follower(env) else renewal
    found = {"tls": f"certificate from {origin}, {ended} {when} ({left} days){renewal}", "tls_days_left": left}
    if left < WARN_DAYS:
        advice = (
            f"the first host renews it: run `inv server.setup --env {env.name}` to copy its renewal here"
            if follower(env)
            else f"renewal failed or did not run: see `/opt/pushdeploy/bin/deploy tls-renew {env.name}` as root"
            if acme(env)
            else f"renew {env['TLS_CERTIFICATE']}, then run `inv server.setup --env {env.name}` (or bin/deploy "
            f"tls-reload {env.name})"
        )
        found["tls_warning"] = f"the certificate {'has ended' if left < 0 else f'ends in {left} days'}: {advice}"
    return found


def plan_line(env, now: float | None = None) -> str:
    """deploy.plan's word on the certificate a deploy would install: its end, or why its
    preflight would refuse it ('refused: ...')."""
    cert_path = source(env)[0]
    domains = ", ".join(env["TLS_ACME_DOMAINS"].split())
    if fleet(env) and not os.path.exists(cert_path):
        return f"ACME certificate for {domains}: none yet; `inv server.setup` obtains it on the first host, copies it"
    if needs_certificate(env):
        return f"ACME certificate for {domains}: obtained after the switch, once the proxy answers on port 80"
    try:
        current_pair(env)
        ends = not_after(cert_path)
    except TlsError as error:
        return f"refused: {error}"
    except (OSError, ValueError, ssl.SSLError) as error:
        return f"refused: {cert_path} cannot be read as a certificate ({error})"
    left = days_left(ends, now)
    soon = f": renew it, fewer than {WARN_DAYS} days left" if left < WARN_DAYS else ""
    what = f"ACME certificate for {domains}" if acme(env) else f"certificate {cert_path}"
    return f"{what}, ends {time.strftime('%Y-%m-%d', time.gmtime(ends))} ({left} days){soon}"


def apply(env, reload) -> int:
    """Install tls/ and, when the proxy runs and what it serves changed, have RELOAD(env) load
    it gracefully (bin/install, tls-reload): 0, or 1 with the reason said."""
    try:
        install(env)
    except TlsError as error:
        print(f"tls: {error}", flush=True)
        return 1
    if not enabled(env):
        return 0
    if served(env):
        print(f"tls: {expiry(env).get('tls', '')}", flush=True)
        return 0
    if not reload(env):
        print(
            "tls: installed; the proxy serves it from the next deploy (it does not run yet, or runs without"
            " port 443 until that deploy recreates it, or did not reload)",
            flush=True,
        )
        return 0
    record_served(env)
    print(f"tls: the proxy reloaded; {expiry(env).get('tls', '')}", flush=True)
    return 0
