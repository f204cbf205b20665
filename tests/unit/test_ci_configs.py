"""The CI configs users copy (.circleci/config.yml, .github/workflows/deploy.yml).

They are checked against the CI vendors' schemas, then read as data to check
what a user relies on: staging deploys only from master, production only from a
release tag and only after an approval, the tag reaches `inv deploy.production`,
nothing secret is committed, and every `inv` task and option they call exists
(so renaming a task or an option breaks this test, not a user's pipeline).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CIRCLE = ROOT / ".circleci" / "config.yml"
GITHUB = ROOT / ".github" / "workflows" / "deploy.yml"
CONFIGS = [CIRCLE, GITHUB]

RELEASES = ["1.4.0", "1.4.0-rc.1", "10.20.30"]
NOT_RELEASES = ["v1.4.0", "master", "latest", "1.4", "feature/1.4.0"]


# ------------------------------------------------------------------ schemas


@pytest.mark.parametrize(
    ("path", "schema"), [(CIRCLE, "vendor.circle-ci"), (GITHUB, "vendor.github-workflows")], ids=["circleci", "github"]
)
def test_config_matches_the_vendor_schema(path, schema):
    exe = shutil.which("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema is not installed (pip install -r requirements-dev.txt)")
    result = subprocess.run([exe, "--builtin-schema", schema, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{path.relative_to(ROOT)} does not match {schema}:\n{result.stdout}{result.stderr}"


# ------------------------------------------------------------------ helpers


def load(path: Path):
    """The YAML as plain data: ruamel.yaml (comes with check-jsonschema), else PyYAML."""
    if importlib.util.find_spec("ruamel.yaml") is not None:
        from ruamel.yaml import YAML

        return YAML(typ="safe", pure=True).load(path.read_text())
    yaml = pytest.importorskip("yaml", reason="neither ruamel.yaml nor PyYAML is installed")
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def circle():
    return load(CIRCLE)


@pytest.fixture(scope="module")
def github():
    return load(GITHUB)


def invoke(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"inv {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


@cache
def known_tasks() -> frozenset[str]:
    return frozenset(re.findall(r"^ {2}([A-Za-z0-9_.-]+)", invoke("--list"), flags=re.M))


@cache
def task_options(task: str) -> frozenset[str]:
    text = invoke("--help", task)
    options = text.split("Options:", 1)[1] if "Options:" in text else ""
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", options))


def inv_calls(command: str) -> list[list[str]]:
    """Each `inv`/`invoke` call in a shell script, as its words after `inv`."""
    calls = []
    for line in command.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            assert not re.search(r"\binv(oke)?\b", line), f"cannot parse {line!r}"
            continue
        for i, word in enumerate(words):
            if word in ("inv", "invoke"):
                rest = []
                for arg in words[i + 1 :]:
                    if arg in ("&&", "||", ";", "|"):
                        break
                    rest.append(arg)
                calls.append(rest)
    return calls


def option_value(args: list[str], long: str, short: str) -> str | None:
    for i, arg in enumerate(args):
        if arg in (long, short) and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
    return None


def circle_regex(text: str) -> re.Pattern[str]:
    assert text.startswith("/") and text.endswith("/"), f"{text!r} is not a CircleCI /regex/"
    return re.compile(text[1:-1])


def circle_fullmatch(filters: dict, kind: str, name: str) -> bool:
    """Whether CircleCI's `only` filter of that kind selects the name (whole-string match)."""
    only = (filters.get(kind) or {}).get("only")
    if only is None:
        return False
    for item in only if isinstance(only, list) else [only]:
        if (item.startswith("/") and circle_regex(item).fullmatch(name)) or item == name:
            return True
    return False


def circle_steps(config: dict, steps: list) -> list[tuple[str, object]]:
    """A job's steps as (name, value), with the config's reusable commands expanded."""
    out = []
    commands = config.get("commands") or {}
    for step in steps:
        name, value = (step, None) if isinstance(step, str) else next(iter(step.items()))
        if name in commands:
            out += circle_steps(config, commands[name]["steps"])
        else:
            out.append((name, value))
    return out


def circle_job(config: dict, name: str) -> tuple[dict, list[tuple[str, object]]]:
    job = config["jobs"][name]
    return job, circle_steps(config, job["steps"])


def circle_runs(steps) -> list[str]:
    return [value if isinstance(value, str) else value["command"] for name, value in steps if name == "run"]


def circle_workflow(config: dict) -> dict[str, dict]:
    """The one workflow's jobs: name -> its workflow settings (requires, filters, type)."""

    def names(workflow):
        return {e if isinstance(e, str) else next(iter(e)) for e in workflow["jobs"]}

    # The build-and-deploy workflow (a scheduled one, such as review-prune, runs no build).
    workflows = [w for w in config["workflows"].values() if isinstance(w, dict) and "jobs" in w and "build" in names(w)]
    assert len(workflows) == 1
    jobs = {}
    for entry in workflows[0]["jobs"]:
        if isinstance(entry, str):
            jobs[entry] = {}
        else:
            ((name, settings),) = entry.items()
            settings = settings or {}
            jobs[settings.get("name", name)] = settings
    return jobs


def github_triggers(workflow: dict) -> dict:
    # PyYAML (YAML 1.1) reads the key `on` as True; ruamel.yaml (1.2) keeps "on".
    return workflow.get("on", workflow.get(True))


def github_env(job: dict, step: dict) -> dict:
    return {**(job.get("env") or {}), **(step.get("env") or {})}


def github_expand(text: str, env: dict) -> str:
    """Replace $NAME / ${NAME} in a script with the expression the workflow sets it to."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: str(env.get(m.group(1), m.group(0))), text)


def expression(text) -> str:
    return " ".join(str(text or "").replace("${{", "").replace("}}", "").split())


def all_runs() -> list[tuple[Path, str]]:
    runs = []
    config = load(CIRCLE)
    for name in config["jobs"]:
        runs += [(CIRCLE, command) for command in circle_runs(circle_job(config, name)[1])]
    for job in load(GITHUB)["jobs"].values():
        runs += [(GITHUB, step["run"]) for step in job["steps"] if "run" in step]
    return runs


# ------------------------------------------------------------------ CircleCI


def test_circleci_build_pushes_the_commit_and_the_release_tag(circle):
    job, steps = circle_job(circle, "build")
    executor = circle["executors"][job["executor"]] if "executor" in job else job
    assert "docker" in executor, "build runs in a docker executor"
    names = [name for name, _ in steps]
    assert "checkout" in names and "setup_remote_docker" in names
    script = "\n".join(circle_runs(steps))
    assert re.search(r'docker login "?\$REGISTRY"? .*--password-stdin', script)
    assert "$REGISTRY_PASSWORD" in script and "$REGISTRY_USER" in script
    assert re.search(r"docker build .*example/", script, flags=re.S)
    assert 'docker push "$REGISTRY/pixel:$CIRCLE_SHA1"' in script
    assert 'docker push "$REGISTRY/pixel:$CIRCLE_TAG"' in script
    filters = circle_workflow(circle)["build"].get("filters") or {}
    assert "only" not in (filters.get("branches") or {}), "build runs on every branch"
    assert all(circle_fullmatch(filters, "tags", tag) for tag in RELEASES), "build also runs on release tags"


def test_circleci_staging_deploys_only_from_master(circle):
    settings = circle_workflow(circle)["deploy-staging"]
    assert "build" in settings["requires"]
    filters = settings["filters"]
    assert circle_fullmatch(filters, "branches", "master")
    assert not any(circle_fullmatch(filters, "branches", b) for b in ("main", "develop", "feature/x"))
    assert "tags" not in filters, "no tags filter: CircleCI then never runs it for a tag"
    calls = [c for cmd in circle_runs(circle_job(circle, "deploy-staging")[1]) for c in inv_calls(cmd)]
    assert [c[0] for c in calls] == ["deploy.staging"]
    wait = option_value(calls[0], "--wait", "-w")
    assert wait is not None and int(wait) > 0, "successive master builds queue instead of failing"
    assert option_value(calls[0], "--tag", "-t") is None, "the tool deploys $CIRCLE_SHA1 itself"


def test_circleci_production_waits_for_approval_on_release_tags_only(circle):
    workflow = circle_workflow(circle)
    hold, deploy = workflow["hold-production"], workflow["deploy-production"]
    assert hold["type"] == "approval"
    assert "build" in hold["requires"]
    assert deploy["requires"] == ["hold-production"]
    # Every job on the way to deploy-production must select release tags, or
    # CircleCI never runs the chain for a tag.
    chain, todo = set(), ["deploy-production"]
    while todo:
        name = todo.pop()
        chain.add(name)
        todo += [r for r in workflow[name].get("requires") or [] if r not in chain]
    assert chain == {"build", "hold-production", "deploy-production"}
    for name in chain:
        filters = workflow[name].get("filters") or {}
        assert all(circle_fullmatch(filters, "tags", tag) for tag in RELEASES), name
        assert not any(circle_fullmatch(filters, "tags", tag) for tag in NOT_RELEASES), name
    for name in ("hold-production", "deploy-production"):
        assert circle_regex(workflow[name]["filters"]["branches"]["ignore"]).fullmatch("master"), (
            f"{name} never runs for a branch"
        )


def test_circleci_production_deploys_the_tag(circle):
    calls = [c for cmd in circle_runs(circle_job(circle, "deploy-production")[1]) for c in inv_calls(cmd)]
    assert [c[0] for c in calls] == ["deploy.production"]
    assert option_value(calls[0], "--tag", "-t") == "$CIRCLE_TAG"


@pytest.mark.parametrize("name", ["deploy-staging", "deploy-production"])
def test_circleci_deploy_jobs_get_the_key_from_circleci_and_the_host_keys_from_the_environment(circle, name):
    job, steps = circle_job(circle, name)
    executor = circle["executors"][job["executor"]] if "executor" in job else job
    assert executor["docker"][0]["image"].startswith("cimg/python:3.")
    names = [n for n, _ in steps]
    assert names.index("checkout") < names.index("add_ssh_keys")
    assert any(re.fullmatch(r"pip install -r requirements\.txt", c.strip()) for c in circle_runs(steps))
    fingerprints = dict(steps)["add_ssh_keys"]["fingerprints"]
    assert fingerprints and all(
        f.startswith(("SHA256:", "MD5:")) or re.fullmatch(r"([0-9a-f]{2}:){15}[0-9a-f]{2}", f) for f in fingerprints
    )
    # DEPLOY_SSH_KEY unset (paramiko uses the agent add_ssh_keys fills) and
    # DEPLOY_KNOWN_HOSTS from the project settings: neither is set in the file.
    text = CIRCLE.read_text()
    assert not re.search(r"^\s*-?\s*DEPLOY_(SSH_KEY|KNOWN_HOSTS)\s*:", text, flags=re.M)
    assert not any("known_hosts" in c for c in circle_runs(steps)), "no file step: the tool reads DEPLOY_KNOWN_HOSTS"


# ------------------------------------------------------------------ GitHub Actions


def test_github_runs_on_master_and_release_tags(github):
    triggers = github_triggers(github)
    assert set(triggers) == {"push"}, "no pull_request trigger: deploy secrets never reach a PR"
    assert triggers["push"]["branches"] == ["master"]
    (pattern,) = triggers["push"]["tags"]
    # GitHub filter patterns: `+` repeats the previous character, `*` is any text, `.` is literal.
    regex = re.compile(re.escape(pattern).replace(r"\+", "+").replace(r"\*", ".*").replace(r"\[0\-9\]", "[0-9]"))
    assert all(regex.fullmatch(tag) for tag in RELEASES)
    assert not any(regex.fullmatch(tag) for tag in NOT_RELEASES)


def test_github_token_is_read_only(github):
    assert github["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in github["jobs"].values())


def test_github_build_pushes_the_commit_and_the_release_tag(github):
    job = github["jobs"]["build"]
    pushes = []  # (step condition, expanded push command)
    for step in job["steps"]:
        script = github_expand(step.get("run", ""), github_env(job, step))
        if "docker login" in script:
            assert "--password-stdin" in script and "${{ secrets.REGISTRY_PASSWORD }}" in script
        pushes += [(expression(step.get("if")), line) for line in script.splitlines() if "docker push" in line]
    assert any("/pixel:${{ github.sha }}" in line and not cond for cond, line in pushes), "every build pushes :<sha>"
    assert any("/pixel:${{ github.ref_name }}" in line and "tag" in cond for cond, line in pushes), (
        "tags also push :<tag>"
    )


@pytest.mark.parametrize(
    ("name", "environment", "condition"),
    [
        ("deploy-staging", "staging", "github.ref == 'refs/heads/master'"),
        (
            "deploy-production",
            "production",
            "startsWith(github.ref, 'refs/tags/') && vars.PRODUCTION_PULL_CHANNEL == ''",
        ),
    ],
)
def test_github_deploy_job_runs_after_build_only_for_its_ref(github, name, environment, condition):
    job = github["jobs"][name]
    needs = job["needs"] if isinstance(job["needs"], list) else [job["needs"]]
    assert "build" in needs
    assert expression(job["if"]) == condition
    env = job["environment"]
    # production: a protected environment with required reviewers is the approval.
    assert (env if isinstance(env, str) else env["name"]) == environment
    concurrency = job.get("concurrency") or github.get("concurrency")
    assert isinstance(concurrency, dict) and environment in concurrency["group"]
    assert concurrency["cancel-in-progress"] is False, "never cancel a running deploy"


@pytest.mark.parametrize("name", ["deploy-staging", "deploy-production"])
def test_github_deploy_key_is_a_private_file_passed_by_path(github, name):
    job = github["jobs"][name]
    steps = job["steps"]
    assert any(step.get("uses", "").startswith("actions/setup-python@") for step in steps)
    write = next(i for i, step in enumerate(steps) if "DEPLOY_SSH_KEY_PRIVATE" in step.get("run", ""))
    deploy = next(i for i, step in enumerate(steps) if inv_calls(step.get("run", "")))
    install = next(i for i, step in enumerate(steps) if "pip install -r requirements.txt" in step.get("run", ""))
    assert install < deploy and write < deploy
    script = steps[write]["run"]
    assert script.index("umask 077") < script.index('> "$RUNNER_TEMP/deploy_key"')
    assert github_env(job, steps[write])["DEPLOY_SSH_KEY_PRIVATE"] == "${{ secrets.DEPLOY_SSH_KEY_PRIVATE }}"
    env = github_env(job, steps[deploy])
    assert env["DEPLOY_SSH_KEY"] == "${{ runner.temp }}/deploy_key", "DEPLOY_SSH_KEY is the key's path"
    assert re.fullmatch(r"\$\{\{ (vars|secrets)\.DEPLOY_KNOWN_HOSTS \}\}", env["DEPLOY_KNOWN_HOSTS"])
    assert "DEPLOY_SSH_KEY_PRIVATE" not in env, "the inv step never sees the key itself"


def test_github_staging_and_production_commands(github):
    def calls(name):
        job = github["jobs"][name]
        return [(call, github_env(job, step)) for step in job["steps"] for call in inv_calls(step.get("run", ""))]

    ((staging, _),) = calls("deploy-staging")
    assert staging[0] == "deploy.staging"
    assert option_value(staging, "--tag", "-t") is None, "the tool deploys $GITHUB_SHA itself"
    ((production, env),) = calls("deploy-production")
    assert production[0] == "deploy.production"
    tag = option_value(production, "--tag", "-t")
    assert tag is not None and github_expand(tag, env) == "${{ github.ref_name }}"


# ------------------------------------------------------------------ both


@pytest.mark.parametrize("path", CONFIGS, ids=["circleci", "github"])
def test_no_secret_is_committed(path):
    text = path.read_text()
    assert "-----BEGIN" not in text and "PRIVATE KEY" not in text
    for line in text.splitlines():
        if "docker login" in line:
            assert "--password-stdin" in line
            assert not re.search(r"(--password(?!-stdin)|\s-p)(\s|=)", line), line
    if path == GITHUB:
        data = load(path)
        for job in data["jobs"].values():
            for step in [{}, *job["steps"]]:
                for key, value in github_env(job, step).items():
                    if re.search(r"PASSWORD|PRIVATE|TOKEN|SECRET", key):
                        assert re.fullmatch(r"\$\{\{ secrets\.[A-Z0-9_]+ \}\}", str(value)), (
                            f"{key} must come from secrets"
                        )
    else:
        # CircleCI has no secret syntax: secrets live in project settings, never in `environment:`.
        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "environment" and isinstance(value, dict):
                        bad = [k for k in value if re.search(r"PASSWORD|KEY|TOKEN|SECRET|KNOWN_HOSTS", str(k))]
                        assert not bad, f"set {bad} in the CircleCI project settings, not in the file"
                    walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(load(path))


def test_every_inv_task_and_option_used_exists():
    used = [(path, call) for path, command in all_runs() for call in inv_calls(command)]
    assert {call[0] for _, call in used} >= {"deploy.staging", "deploy.production"}
    tasks = known_tasks()
    assert tasks, "inv --list listed no tasks"
    for path, call in used:
        task = call[0]
        where = path.relative_to(ROOT)
        assert task in tasks, f"{where}: `inv {task}` is not a task (inv --list: {sorted(tasks)})"
        options = task_options(task)
        for arg in call[1:]:
            if arg.startswith("-"):
                assert arg.split("=", 1)[0] in options, f"{where}: `inv {task}` has no option {arg} ({sorted(options)})"


# ------------------------------------------------------------------ pull mode (README, "Pull mode")


def test_circleci_pull_mode_only_moves_the_channel_after_approval(circle):
    workflow = circle_workflow(circle)
    promote = workflow["promote-production"]
    assert promote["requires"] == ["hold-production"]
    assert all(circle_fullmatch(promote["filters"], "tags", tag) for tag in RELEASES)
    assert not any(circle_fullmatch(promote["filters"], "tags", tag) for tag in NOT_RELEASES)
    _, steps = circle_job(circle, "promote-production")
    names = [name for name, _ in steps]
    assert "add_ssh_keys" not in names, "in pull mode CI never reaches the server"
    runs = circle_runs(steps)
    assert '[ -z "${PRODUCTION_PULL_CHANNEL:-}" ]' in runs[0] and "circleci-agent step halt" in runs[0], (
        "push mode: it does nothing"
    )
    script = "\n".join(runs)
    assert 'docker tag "$REGISTRY/pixel:$CIRCLE_TAG" "$REGISTRY/pixel:$PRODUCTION_PULL_CHANNEL"' in script
    assert 'docker push "$REGISTRY/pixel:$PRODUCTION_PULL_CHANNEL"' in script
    assert not [call for command in runs for call in inv_calls(command)]


def test_circleci_push_deploy_stands_down_in_pull_mode(circle):
    _, steps = circle_job(circle, "deploy-production")
    first = circle_runs(steps)[0]
    assert '[ -n "${PRODUCTION_PULL_CHANNEL:-}" ]' in first and "circleci-agent step halt" in first
    assert steps[0][0] == "run", "it stops before checking out or loading the key"


def test_github_pull_mode_only_moves_the_channel_after_approval(github):
    job = github["jobs"]["promote-production"]
    assert job["needs"] == "build" or job["needs"] == ["build"]
    assert expression(job["if"]) == "startsWith(github.ref, 'refs/tags/') && vars.PRODUCTION_PULL_CHANNEL != ''"
    assert (job["environment"] if isinstance(job["environment"], str) else job["environment"]["name"]) == "production"
    assert job["concurrency"]["cancel-in-progress"] is False
    scripts = [(step, github_expand(step.get("run", ""), github_env(job, step))) for step in job["steps"]]
    assert not any("DEPLOY_SSH_KEY" in str(step) for step, _ in scripts), "in pull mode CI never reaches the server"
    assert not [call for _, script in scripts for call in inv_calls(script)]
    pushes = [line.strip() for _, script in scripts for line in script.splitlines() if "docker push" in line]
    assert pushes == ['docker push "${{ vars.REGISTRY }}/pixel:${{ vars.PRODUCTION_PULL_CHANNEL }}"']


def test_each_ci_job_that_reaches_the_server_holds_its_own_key(circle):
    """Least privilege (README, Security model): staging, production and review jobs each
    load a different named key, so a pull request's code never holds a production key."""
    fingerprints = {}
    for name in ("deploy-staging", "deploy-production", "review-up", "review-prune"):
        _, steps = circle_job(circle, name)
        (fingerprint,) = dict(steps)["add_ssh_keys"]["fingerprints"]
        fingerprints[name] = fingerprint
    assert len({fingerprints["deploy-staging"], fingerprints["deploy-production"], fingerprints["review-up"]}) == 3
    assert fingerprints["review-up"] == fingerprints["review-prune"]
    review = (ROOT / ".github/workflows/review.yml").read_text()
    assert "secrets.DEPLOY_SSH_KEY_REVIEW" in review and "secrets.DEPLOY_SSH_KEY_PRIVATE" not in review
