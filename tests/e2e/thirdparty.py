"""A third-party Django project, as a new user has one, and pushdeploy as pip installs it.

What the machine lacks is made once and cached beside the sandbox's Debian base
($PD_SANDBOX_CACHE/third-party): a venv with the project template's tool (``wagtail
start``), and a wheelhouse of the project's requirements for the image's Python, both
from the package index. The image's build then installs from that directory, offline.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import ROOT

CACHE = Path(os.environ.get("PD_SANDBOX_CACHE", "/var/cache/pushdeploy-sandbox")) / "third-party"
WAGTAIL = "wagtail==8.0.1"
IMAGE_PYTHON = "313"  # Debian trixie's, in `scripts/sandbox python-base`
WHEELHOUSE = "pip-wheelhouse"  # in the build context (Wagtail's .dockerignore leaves out wheels/)


def run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} -> {result.returncode}\n{result.stdout}{result.stderr}")
    return result.stdout


def _cached(name: str, make) -> Path:
    """CACHE/NAME, made by make(tmp) once: a half-made one (interrupted) is made again."""
    done = CACHE / name
    if (done / ".complete").exists():
        return done
    tmp = CACHE / f"{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(done, ignore_errors=True)
    tmp.mkdir(parents=True)
    make(tmp)
    (tmp / ".complete").touch()
    tmp.rename(done)
    return done


def start_wagtail_project(parent: Path, name: str) -> Path:
    """`wagtail start NAME` in PARENT, with Wagtail from the package index (cached)."""

    def make(venv: Path) -> None:
        run(sys.executable, "-m", "venv", venv)
        run(venv / "bin/pip", "install", "--quiet", WAGTAIL)

    # A venv is bound to its path: make it where it stays.
    tool = CACHE / "wagtail-tool"
    if not (tool / ".complete").exists():
        shutil.rmtree(tool, ignore_errors=True)
        make(tool)
        (tool / ".complete").touch()
    run(tool / "bin/wagtail", "start", name, cwd=parent)
    return parent / name


def wheelhouse(requirements: list[str]) -> Path:
    """Wheels for REQUIREMENTS and all they need, for the image's Python (cached by content)."""
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:12]

    def make(dest: Path) -> None:
        run(
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--dest",
            dest,
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            IMAGE_PYTHON,
            "--abi",
            f"cp{IMAGE_PYTHON}",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux2014_x86_64",
            *requirements,
        )

    return _cached(f"wheels-cp{IMAGE_PYTHON}-{key}", make)


def requirements_of(project: Path) -> list[str]:
    """requirements.txt's lines, and the pins the Dockerfile installs itself (gunicorn)."""
    lines = [
        line.strip() for line in (project / "requirements.txt").read_text().splitlines() if line.strip()[:1].isalnum()
    ]
    pins = re.findall(
        r"""pip install ["']?([A-Za-z0-9_.\[\]-]+==[A-Za-z0-9_.]+)""", (project / "Dockerfile").read_text()
    )
    return lines + pins


def for_the_sandbox(dockerfile: str, base: str) -> str:
    """The project's Dockerfile as this sandbox can build it, and nothing else changed: the
    official python image replaced by the sandbox's stand-in, apt-get left out (builds here
    have no network, and binary wheels carry their libraries), and pip pointed at the
    wheelhouse in the build context."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    out: list[str] = []
    first_from = True
    for line in joined.splitlines():
        word = line.split(None, 1)[0].upper() if line.strip() else ""
        if word == "FROM":
            line = re.sub(r"^(\s*FROM\s+)python:\S+", rf"\g<1>{base}", line, flags=re.IGNORECASE)
            out.append(line)
            if first_from:
                out += [f"COPY {WHEELHOUSE}/ /wheels/", "ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels"]
                first_from = False
            continue
        if word == "RUN" and "apt-get" in line:
            parts = [p.strip() for p in line.split(None, 1)[1].split("&&")]
            kept = [p for p in parts if "apt-get" not in p and "/var/lib/apt/lists" not in p]
            if not kept:
                continue
            line = "RUN " + " && ".join(kept)
        out.append(line)
    return "\n".join(out) + "\n"


def installed_pushdeploy(tmp: Path) -> Path:
    """`pip install pushdeploy` into a venv of its own, from a wheel of this checkout:
    returns the venv's `pushdeploy` program (the entry point, not this checkout's code)."""
    source = tmp / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache"),
    )
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp / "dist", source)
    (wheel,) = (tmp / "dist").glob("pushdeploy-*.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin/pip", "install", "--quiet", wheel)
    return venv / "bin/pushdeploy"
