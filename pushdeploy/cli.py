"""`pushdeploy`: the tasks as a program of its own on Invoke, for a project with no tasks.py.

It reads the project's settings from pushdeploy.yaml (or invoke.yaml) in the current
directory or the nearest one above it, and PUSHDEPLOY_* environment variables for
Invoke's own options; `pushdeploy --list`, `pushdeploy deploy.staging` as with `inv`.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Config, Program

from pushdeploy import __version__

SETTINGS_FILES = ("pushdeploy", "invoke")  # pushdeploy.yaml first, then invoke.yaml
SUFFIXES = ("yaml", "yml", "json", "py")


def project_dir(start: Path) -> tuple[Path, str] | None:
    """The nearest directory from START upwards with a settings file, and that file's prefix."""
    for folder in (start, *start.parents):
        for prefix in SETTINGS_FILES:
            if any((folder / f"{prefix}.{suffix}").is_file() for suffix in SUFFIXES):
                return folder, prefix
    return None


class PushdeployConfig(Config):
    prefix = "pushdeploy"


class InvokeFileConfig(PushdeployConfig):
    file_prefix = "invoke"


class PushdeployProgram(Program):
    """Invoke's Program with the project found from the current directory (an installed
    collection has no tasks.py to say where the project is)."""

    def create_config(self) -> None:
        self.project = project_dir(Path.cwd())
        uses_invoke_yaml = self.project is not None and self.project[1] == "invoke"
        self.config = (InvokeFileConfig if uses_invoke_yaml else self.config_class)()

    def update_config(self, merge: bool = True) -> None:
        if self.project:
            self.config.set_project_location(str(self.project[0]))
            self.config.load_project(merge=False)
        super().update_config(merge)


def main() -> None:
    from pushdeploy.tasks import namespace

    PushdeployProgram(
        name="pushdeploy", binary="pushdeploy", namespace=namespace, version=__version__, config_class=PushdeployConfig
    ).run()


if __name__ == "__main__":
    main()
