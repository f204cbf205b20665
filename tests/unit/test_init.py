"""`pushdeploy init`: what it finds, what it writes, and that what it writes is what the
rest of the tool accepts (settings, the proxy checks, the CI vendors' schemas)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Config

from pushdeploy import init, local, plan, protocol, settings

ANSWERS = init.Answers("shop", "registry.example.com/shop", "shop.settings", "deploy@10.0.0.1", "deploy@10.0.0.2")


def project(tmp_path: Path) -> Path:
    (tmp_path / "shop").mkdir(parents=True)
    (tmp_path / "manage.py").write_text('import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")\n')
    return tmp_path


def test_it_finds_the_settings_module_and_a_name(tmp_path):
    root = project(tmp_path / "My Shop!")
    assert init.found(root) == {"app": "my-shop", "settings_module": "shop.settings"}
    nested = tmp_path / "repo"
    (nested / "src").mkdir(parents=True)
    (nested / "src/manage.py").write_text("os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site_conf.prod')\n")
    assert init.found(nested)["settings_module"] == "site_conf.prod"


@pytest.mark.parametrize("database", [True, False], ids=["db", "no-db"])
def test_what_it_writes_loads_and_passes_the_proxy_checks(tmp_path, database):
    root = project(tmp_path)
    texts = init.render(init.Answers(**{**ANSWERS.__dict__, "database": database}))
    for path, text in texts.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    assert not [text for text in texts.values() if re.search(r"\{\{[a-z_]+\}\}", text)]  # every blank filled
    shutil.copy(root / "deploy/server.env.example", root / "deploy/staging.env")
    config = Config(project_location=str(root))
    config.set_project_location(str(root))
    config._set(file_prefix="pushdeploy")
    config.load_project()
    loaded = settings.load(config, {})
    for name in ("staging", "production"):
        env = loaded.environment(name)
        assert env.db_service == ("db" if database else "") and env.backup is (database and name == "production")
        files = local.app_files(loaded, env)
        assert set(files) == {"docker-compose.yml", "nginx/app.conf"}
        assert plan.proxy_config_problems(env, files) == []
        plan.server_conf(env, files)  # the server would accept these settings
    env_text = (root / "deploy/server.env.example").read_text()
    assert "DJANGO_SETTINGS_MODULE=shop.settings" in env_text and ("POSTGRES_PASSWORD=" in env_text) is database
    assert "IMAGE=registry.example.com/shop\n" in env_text


@pytest.mark.parametrize(
    ("path", "schema"),
    [(".circleci/config.yml", "vendor.circle-ci"), (".github/workflows/pushdeploy.yml", "vendor.github-workflows")],
)
def test_its_ci_configs_match_the_vendors_schemas(tmp_path, path, schema):
    exe = shutil.which("check-jsonschema") or shutil.which("check-jsonschema", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("check-jsonschema is not installed (pip install -r requirements-dev.txt)")
    target = tmp_path / Path(path).name
    target.write_text(init.render(ANSWERS)[path])
    result = subprocess.run([exe, "--builtin-schema", schema, str(target)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_never_overwrites_and_asks_only_what_it_cannot_find(tmp_path):
    root = project(tmp_path)
    (root / "pushdeploy.yaml").write_text("# mine\n")
    run = [sys.executable, "-m", "pushdeploy", "init", "--image", "r.example/shop", "--staging-hosts", "a"]
    environ = {**os.environ, "PYTHONPATH": str(protocol.PROJECT_ROOT)}
    refused = subprocess.run(run, cwd=root, env=environ, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "init needs --production-hosts" in refused.stderr
    assert not (root / "deploy").exists()  # nothing written before every answer is in
    result = subprocess.run(
        [*run, "--production-hosts", "b"],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert (root / "pushdeploy.yaml").read_text() == "# mine\n"
    assert "kept  pushdeploy.yaml (it exists: init never overwrites)" in result.stdout
    assert "wrote deploy/docker-compose.yml" in result.stdout and 'STATIC_ROOT = "/srv/static"' in result.stdout
    assert "shop.settings" in (root / "deploy/server.env.example").read_text()  # found in manage.py, not asked


def test_run_by_inv_it_writes_the_settings_inv_reads(tmp_path):
    root = project(tmp_path)
    (root / "tasks.py").write_text("from pushdeploy.tasks import namespace  # noqa: F401\n")
    environ = {**os.environ, "PYTHONPATH": str(protocol.PROJECT_ROOT)}
    flags = ["--image", "r.example/shop", "--staging-hosts", "a", "--production-hosts", "b"]
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "init", *flags], cwd=root, env=environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (root / "invoke.yaml").is_file() and not (root / "pushdeploy.yaml").exists()
    ci = (root / ".github/workflows/pushdeploy.yml").read_text()
    assert "IMAGE: r.example/shop" in ci and f"pip install pushdeploy=={__import__('pushdeploy').__version__}" in ci
