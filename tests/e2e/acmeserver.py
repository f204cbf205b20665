"""pebble, Debian's ACME test server, and its DNS (pebble-challtestsrv), on loopback for the e2e
tests of `tls.acme`: on this machine for the one-host sandbox, or inside a sandbox host's network
namespace for the fleet (where that host's certbot reaches it on its own loopback).

Its DNS answers ADDRESS for every name, and it validates HTTP-01 on HTTP_PORT there: the proxy
under test, a load balancer, or one host of a fleet (which must pass the challenge on). Its
HTTPS comes from a CA made here (WORK/ca.crt: the `ca_bundle` certbot trusts); the certificates
it issues chain to a root it makes at each start (yielded as a file)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

ACME_PORT, ACME_MANAGEMENT, DNS_PORT, DNS_MANAGEMENT = 14000, 15000, 18053, 18055
DIRECTORY = f"https://127.0.0.1:{ACME_PORT}/dir"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def listener_pair(folder: Path) -> None:
    """A test CA (ca.crt: what certbot trusts for the ACME server) and pebble's own HTTPS pair."""
    openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"),
        *("-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"), "-subj", "/CN=pushdeploy e2e ACME CA"),
    )
    (folder / "pebble.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost"),
        *("-keyout", str(folder / "pebble.key"), "-out", str(folder / "pebble.csr")),
    )
    openssl(
        *("x509", "-req", "-in", str(folder / "pebble.csr"), "-CA", str(folder / "ca.crt")),
        *("-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "2"),
        *("-extfile", str(folder / "pebble.ext"), "-out", str(folder / "pebble.crt")),
    )


def fetch(url: str, work: Path, enter: list, seconds: float = 30) -> bytes:
    """URL's body (verified with the test CA), asked where pebble runs; retried until it answers."""
    deadline = time.monotonic() + seconds
    while True:
        got = subprocess.run(
            [*enter, "curl", "-fsS", "--max-time", "5", "--cacert", str(work / "ca.crt"), url],
            capture_output=True,
            timeout=30,
        )
        if got.returncode == 0:
            return got.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} does not answer: {got.stderr.decode()}\n{(work / 'pebble.log').read_text()}")
        time.sleep(0.3)


@contextlib.contextmanager
def pebble(work: Path, http_port: int, address: str = "127.0.0.1", netns: str = ""):
    """pebble and its DNS (every name: ADDRESS) on 127.0.0.1 (in NETNS if given), validating
    HTTP-01 on ADDRESS:HTTP_PORT; yields the root its certificates chain to (a file in WORK)."""
    if not shutil.which("pebble") or not shutil.which("certbot"):
        pytest.fail("pebble and certbot are Debian packages scripts/install-deps installs: run it")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    listener_pair(work)
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{ACME_PORT}",
            "managementListenAddress": f"127.0.0.1:{ACME_MANAGEMENT}",
            "certificate": str(work / "pebble.crt"),
            "privateKey": str(work / "pebble.key"),
            "httpPort": http_port,
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (work / "pebble.json").write_text(json.dumps(config))
    enter = ["ip", "netns", "exec", netns] if netns else []
    log = open(work / "pebble.log", "w")  # noqa: SIM115 (kept open while they run)
    dns = subprocess.Popen(
        [
            *enter,
            *("pebble-challtestsrv", "-dns01", f"127.0.0.1:{DNS_PORT}", "-management", f"127.0.0.1:{DNS_MANAGEMENT}"),
            *("-http01", "", "-https01", "", "-tlsalpn01", ""),
            *("-defaultIPv4", address, "-defaultIPv6", ""),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = subprocess.Popen(
        [*enter, "pebble", "-config", str(work / "pebble.json"), "-dnsserver", f"127.0.0.1:{DNS_PORT}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0"),
        start_new_session=True,
    )
    try:
        fetch(DIRECTORY, work, enter)
        assert dns.poll() is None, (work / "pebble.log").read_text()
        (work / "root.pem").write_bytes(fetch(f"https://127.0.0.1:{ACME_MANAGEMENT}/roots/0", work, enter))
        yield work / "root.pem"
    finally:
        for process in (server, dns):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        log.close()
        print((work / "pebble.log").read_text()[-3000:])


def served(address: str, port: int, root: Path, name: str) -> dict:
    """The certificate ADDRESS:PORT serves for NAME (SNI), verified against ROOT."""
    with socket.create_connection((address, port), timeout=5) as raw:
        with ssl.create_default_context(cafile=str(root)).wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert()


def serial(address: str, port: int, root: Path, name: str) -> str:
    """The serial number of what ADDRESS:PORT serves for NAME ('' while it serves none it can)."""
    try:
        return served(address, port, root, name)["serialNumber"]
    except (OSError, ssl.SSLError):
        return ""


def eventually(ask, done, seconds: float = 10):
    """ASK() until DONE(answer) or SECONDS passed: nginx -s reload returns before its new workers
    take every connection (the old ones still answer a few)."""
    deadline = time.monotonic() + seconds
    answer = ask()
    while not done(answer) and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = ask()
    return answer
