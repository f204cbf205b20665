"""Certificates for e2e tests: a test CA of their own and a certificate from it for the names a
test serves (a site, a wildcard), made with openssl, the key root-only as a server keeps it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def site_certificate(folder: Path, *names: str, days: int = 2) -> Path:
    """FOLDER (made afresh, 0700) with ca.crt, and fullchain.pem and privkey.pem (0600) for NAMES
    (DNS names, * allowed); the CA file to trust."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60, cwd=folder)

    openssl("req", "-x509", *EC, "-days", str(days), "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=e2e CA")
    openssl("req", *EC, "-keyout", "privkey.pem", "-out", "site.csr", "-subj", f"/CN={names[0]}")
    (folder / "site.ext").write_text("subjectAltName=" + ",".join(f"DNS:{name}" for name in names) + "\n")
    openssl(
        *("x509", "-req", "-in", "site.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-days", str(days), "-extfile", "site.ext", "-out", "site.crt"),
    )
    (folder / "fullchain.pem").write_bytes((folder / "site.crt").read_bytes() + (folder / "ca.crt").read_bytes())
    (folder / "privkey.pem").chmod(0o600)
    return folder / "ca.crt"
