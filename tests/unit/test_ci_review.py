"""The CI wiring of review environments: .github/workflows/review.yml and the review jobs
of .circleci/config.yml (schema-valid; PR opened or pushed -> review.up with the URL
reported; PR closed -> review.down; a scheduled review.prune)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.unit.test_ci_configs import (
    CIRCLE,
    ROOT,
    circle_job,
    circle_runs,
    expression,
    github_env,
    github_triggers,
    inv_calls,
    known_tasks,
    load,
    option_value,
    task_options,
)

REVIEW = ROOT / ".github" / "workflows" / "review.yml"


@pytest.fixture(scope="module")
def workflow():
    return load(REVIEW)


def calls(workflow, name):
    job = workflow["jobs"][name]
    return [(call, github_env(job, step), step) for step in job["steps"] for call in inv_calls(step.get("run", ""))]


def test_review_workflow_matches_the_vendor_schema():
    exe = shutil.which("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema is not installed (pip install -r requirements-dev.txt)")
    result = subprocess.run(
        [exe, "--builtin-schema", "vendor.github-workflows", str(REVIEW)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_runs_on_pull_request_events_and_a_schedule_never_pull_request_target(workflow):
    triggers = github_triggers(workflow)
    assert set(triggers) == {"pull_request", "schedule"}
    assert set(triggers["pull_request"]["types"]) == {"opened", "synchronize", "reopened", "closed"}
    assert triggers["schedule"][0]["cron"]


def test_opened_or_pushed_brings_up_review_n_and_reports_its_url_as_the_deployments(workflow):
    job = workflow["jobs"]["review-up"]
    assert job["needs"] == "build" or job["needs"] == ["build"]
    assert expression(job["environment"]["name"]) == "review- github.event.pull_request.number"
    assert expression(job["environment"]["url"]) == "steps.up.outputs.url"
    ((call, env, step),) = calls(workflow, "review-up")
    assert call[0] == "review.up" and step["id"] == "up"
    assert (
        option_value(call, "--pr", "-p") == "$PR_NUMBER"
        and env["PR_NUMBER"] == "${{ github.event.pull_request.number }}"
    )
    assert (
        option_value(call, "--tag", "-t") == "$HEAD_SHA"
        and env["HEAD_SHA"] == "${{ github.event.pull_request.head.sha }}"
    )
    build = workflow["jobs"]["build"]
    assert "closed" in expression(build["if"]) and "!=" in expression(build["if"])


def test_closed_takes_it_down_and_the_schedule_prunes(workflow):
    down = workflow["jobs"]["review-down"]
    assert "github.event.action == 'closed'" in expression(down["if"])
    ((call, env, _),) = calls(workflow, "review-down")
    assert call[0] == "review.down" and env["PR_NUMBER"] == "${{ github.event.pull_request.number }}"
    names = [step.get("name") for step in down["steps"]]
    inactive = down["steps"][names.index("Mark the environment's deployments inactive")]
    assert names.index("Remove the review environment") < names.index(
        "Mark the environment's deployments inactive"
    )  # only once it is gone
    assert (
        inactive["env"]["ENVIRONMENT"] == "review-${{ github.event.pull_request.number }}"
        and "state=inactive" in inactive["run"]
    )
    prune = workflow["jobs"]["review-prune"]
    assert expression(prune["if"]) == "github.event_name == 'schedule'"
    ((call, _, _),) = calls(workflow, "review-prune")
    assert call[0] == "review.prune" and option_value(call, "--older-than", "-o") == "7d"


def test_forks_never_get_the_deploy_key(workflow):
    for name in ("build", "review-down"):
        assert "github.event.pull_request.head.repo.full_name == github.repository" in expression(
            workflow["jobs"][name]["if"]
        )
    assert "pull_request_target" not in REVIEW.read_text().split("# Secrets")[1]


def test_circleci_brings_up_pull_requests_and_prunes_nightly():
    config = load(CIRCLE)
    script = "\n".join(circle_runs(circle_job(config, "review-up")[1]))
    ((call,),) = [inv_calls(script)]
    assert call[0] == "review.up" and option_value(call, "--pr", "-p") == "${CIRCLE_PULL_REQUEST##*/}"
    main = config["workflows"]["build-and-deploy"]["jobs"]
    review_up = next(entry["review-up"] for entry in main if isinstance(entry, dict) and "review-up" in entry)
    assert review_up["requires"] == ["build"] and review_up["filters"]["branches"]["ignore"] == "master"
    prune = config["workflows"]["review-prune"]
    assert prune["triggers"][0]["schedule"]["cron"] and prune["jobs"] == ["review-prune"]
    ((call,),) = [inv_calls("\n".join(circle_runs(circle_job(config, "review-prune")[1])))]
    assert call[:3] == ["review.prune", "--older-than", "7d"]


def test_every_review_task_and_option_used_exists(workflow):
    used = [call for job in workflow["jobs"] for call, _, _ in calls(workflow, job)]
    config = load(CIRCLE)
    used += [
        c
        for name in ("review-up", "review-prune")
        for cmd in circle_runs(circle_job(config, name)[1])
        for c in inv_calls(cmd)
    ]
    assert {c[0] for c in used} == {"review.up", "review.down", "review.prune"}
    for call in used:
        assert call[0] in known_tasks()
        for word in call[1:]:
            if word.startswith("-"):
                assert word.split("=")[0] in task_options(call[0]), f"inv {call[0]} has no option {word}"


def test_review_up_hands_the_url_to_github_actions(tmp_path, monkeypatch):
    from pushdeploy.tasks import review

    output = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    review._report_url("http://pr-3.review.example.org/")
    assert output.read_text() == "url=http://pr-3.review.example.org/\n"
