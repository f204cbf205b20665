"""The front proxy of a template's review environments: one nginx container per template,
on 127.0.0.1:REVIEW_PORT and the network pushdeploy-TEMPLATE, routing pr-N.DOMAIN to the
instance TEMPLATE-N by Docker's DNS, asked per request (so the front starts before any
instance does). review.py makes and removes the instances; this module their routes.

With tls: on the template (a certificate for *.DOMAIN from files on the server), the front
serves every review host over HTTPS on TLS_PUBLISH, with tls.py's lines (redirect, HSTS)
from STATE/TEMPLATE/front-tls/ (root-only, mounted read-only); the instances behind it
serve plain HTTP on the template's network."""

from __future__ import annotations

import hashlib
import os
import subprocess
from typing import TYPE_CHECKING

from . import compose, tls
from . import env as envs
from . import run as runner
from .verbs import review_instances

if TYPE_CHECKING:  # review.py imports this module
    from .review import Review


def render_route(review: Review) -> str:
    """The nginx server block routing pr-N.DOMAIN to the instance's proxy, on the template's
    network under the alias TEMPLATE-N. Docker's DNS is asked per request (a variable in
    proxy_pass), so the front starts before an instance does."""
    https = f"\n    include {tls.MOUNT}/*.conf;" if tls.enabled(review.template) else ""
    return f"""# pushdeploy review environment {review.name} (written by bin/deploy review-up)
server {{
    listen 80;
    server_name {review.host};{https}
    location / {{
        resolver 127.0.0.11 valid=5s ipv6=off;
        set $review_upstream {review.name};
        proxy_pass http://$review_upstream:80;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout 2s;
        proxy_read_timeout 60s;
    }}
}}
"""


FRONT_DEFAULT = """# pushdeploy review front proxy: a host name with no review environment gets 404.
server {
    listen 80 default_server;
    server_name _;
    default_type text/plain;
    return 404 'no review environment answers for this host name\\n';
}
"""
FRONT_DEFAULT_TLS = """# ... and over HTTPS, no handshake at all (never another review environment's site).
server {
    listen 443 ssl default_server;
    server_name _;
    ssl_reject_handshake on;
}
"""


def folder_of(template: envs.Env) -> str:
    """The front's certificate, key and lines, root-only (mounted at tls.MOUNT)."""
    return os.path.join(template.state_dir, "front-tls")


def install_tls(template: envs.Env) -> list:
    """The template's certificate for the front (tls:), installed in its root-only folder:
    the `docker run` words that publish and mount it ([] without tls:). tls.TlsError when it
    cannot be served (nothing changed)."""
    folder = folder_of(template)
    if not tls.enabled(template):
        subprocess.run(["rm", "-rf", folder], check=False)
        return []
    cert, key = tls.read_pair(template["TLS_CERTIFICATE"], template["TLS_KEY"])
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    snippet = tls.snippet(int(template["TLS_HSTS"]), template["TLS_REDIRECT"] == "yes").encode()
    for name, data in (("cert.pem", cert), ("key.pem", key), ("tls.conf", snippet)):
        tls.write_private(os.path.join(folder, name), data)
    return ["-p", f"{template['TLS_PUBLISH']}:443", "-v", f"{folder}:{tls.MOUNT}:ro"]


def reload_tls(template: envs.Env) -> str:
    """setup and tls-reload of a review template: its certificate installed for the front and,
    if the front runs with it, served at once (what happened, said)."""
    install_tls(template)
    front = f"pushdeploy-{template.name}-front"
    mounts = runner.output(
        compose.docker(template, "inspect", "-f", "{{range .Mounts}}{{.Destination}} {{end}}", front)
    )
    if mounts[0] != 0 or tls.MOUNT not in mounts[1].split():
        return "the review front proxy serves this certificate from the next review-up"
    if runner.output(compose.docker(template, "exec", front, "nginx", "-s", "reload"))[0] != 0:
        return "the review front proxy did not reload: it serves this certificate from the next review-up"
    return "the review front proxy reloaded: it serves this certificate"


def template_env_value(review: Review, key: str) -> str:
    for line in envs.read_text(os.path.join(review.template.app_dir, ".env")).splitlines():
        if line.startswith(key + "="):
            return line[len(key) + 1 :]
    return ""


def ensure_network(review: Review) -> bool:
    if review.docker("network", "inspect", review.network)[0] == 0:
        return True
    return (
        review.docker("network", "create", "--label", f"pushdeploy.review={review.template.name}", review.network)[0]
        == 0
    )


def _write_public(path: str, text: str) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w") as file:
        file.write(text)
    os.chmod(path, 0o644)


def front_reload(review: Review) -> bool:
    """Start the front proxy if it does not run (or runs with other ports or mounts: made
    again), else reload its routes and certificate."""
    os.makedirs(review.front_dir, mode=0o755, exist_ok=True)
    os.chmod(review.front_dir, 0o755)
    try:
        https = install_tls(review.template)
    except tls.TlsError as error:
        print(f"tls: {error}", flush=True)
        return False
    _write_public(os.path.join(review.front_dir, "default.conf"), FRONT_DEFAULT + (FRONT_DEFAULT_TLS if https else ""))
    for name in review_instances(review.template.name):  # every route as the template says now (tls: on or off)
        if name != review.name and os.path.isfile(os.path.join(review.front_dir, f"{name}.conf")):
            _write_public(
                os.path.join(review.front_dir, f"{name}.conf"), render_route(type(review)(review.template, name))
            )
    if not ensure_network(review):
        return False
    image = template_env_value(review, "PROXY_IMAGE") or "nginx:1.27"
    port = review.template["REVIEW_PORT"]
    made = hashlib.sha256(" ".join([image, port, *https]).encode()).hexdigest()[:16]
    code, state = review.docker(
        "inspect", "-f", '{{.State.Status}} {{index .Config.Labels "pushdeploy.front"}}', review.front
    )
    state, _, label = (state.strip() if code == 0 else "").partition(" ")
    if state == "running" and label == made and review.docker("exec", review.front, "nginx", "-s", "reload")[0] == 0:
        return True
    if state:
        review.docker("rm", "-f", review.front)
    started = review.docker(
        "run", "-d", "--name", review.front, "--label", f"pushdeploy.review={review.template.name}",
        "--label", f"pushdeploy.front={made}",
        "--network", review.network, "--restart", "unless-stopped", "-p", f"127.0.0.1:{port}:80", *https,
        "-v", f"{review.front_dir}:/etc/nginx/conf.d:ro", image, "nginx", "-g", "daemon off;",
    )  # fmt: skip
    if started[0] != 0:
        publish = f" and {review.template['TLS_PUBLISH']} (tls.publish)" if https else ""
        print(
            f"{started[1].rstrip()}\nthe review front proxy did not start on 127.0.0.1:{port}{publish}: is the port in use?",
            flush=True,
        )
        return False
    print(f"front proxy {review.front} started on 127.0.0.1:{port}", flush=True)
    return True


def route_add(review: Review) -> bool:
    os.makedirs(review.front_dir, mode=0o755, exist_ok=True)
    _write_public(os.path.join(review.front_dir, f"{review.name}.conf"), render_route(review))
    if not front_reload(review):
        return False
    print(f"routing {review.host} to {review.name}", flush=True)
    return True


def route_remove(review: Review) -> None:
    try:
        os.unlink(os.path.join(review.front_dir, f"{review.name}.conf"))
    except FileNotFoundError:
        pass
    if review.docker("inspect", review.front)[0] == 0:
        review.docker("exec", review.front, "nginx", "-s", "reload")


def front_remove_if_unused(review: Review) -> None:
    """The front proxy and the template's network go with the last instance."""
    if [name for name in review_instances(review.template.name) if name != review.name]:
        return
    review.docker("rm", "-f", review.front)
    review.docker("network", "rm", review.network)
    subprocess.run(["rm", "-rf", review.front_dir, folder_of(review.template)], check=False)
