"""Where each setting came from: which file, at which of Invoke's config levels.

Invoke merges its config files (the runtime file given with -f, the project's
invoke.yaml or pushdeploy.yaml, the user's, the system's) into one; pushdeploy
needs to know, for a key, the file that set it: relative paths in it resolve
against that file's folder, and an error about it names that file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Invoke's file levels, strongest first.
LEVELS = ("runtime", "project", "user", "system")


@dataclass(frozen=True)
class Sources:
    """The config files that were read, strongest first: (path, their data)."""

    files: tuple = ()  # ((Path, Mapping), ...)
    fallback: Path = field(default_factory=Path.cwd)  # the folder when no file says

    def file_of(self, dotted) -> Path | None:
        """The file that sets DOTTED (e.g. deploy.environments.staging.files, or its parts as a
        tuple where a part has dots: a file's name), or, if none sets it, the one that sets
        its nearest parent."""
        parts = _parts(dotted)
        for depth in range(len(parts), 0, -1):
            for path, data in self.files:
                if _has(data, parts[:depth]):
                    return path
        return None

    def root_of(self, *dotted) -> Path:
        """The folder relative paths of the first of DOTTED that a file sets resolve against."""
        for key in dotted:
            path = self.setter(key)
            if path is not None:
                return path.parent
        return self.fallback

    def name_of(self, dotted) -> str:
        """The file that sets DOTTED, as the user would name it (relative to the current folder)."""
        path = self.file_of(dotted)
        if path is None:
            return "invoke.yaml"
        relative = os.path.relpath(path)
        return str(path) if relative.startswith(("../../", "../..")) else relative

    def setter(self, dotted) -> Path | None:
        """The file that sets exactly DOTTED, or None (a default)."""
        parts = _parts(dotted)
        return next((path for path, data in self.files if _has(data, parts)), None)


def _parts(dotted) -> list:
    """A key's parts: a tuple as it is, a dotted string split (an index such as [0] dropped)."""
    if isinstance(dotted, tuple):
        return list(dotted)
    return [part.split("[", 1)[0] for part in dotted.split(".")]


def _has(data, parts) -> bool:
    for part in parts:
        if not isinstance(data, Mapping) or part not in data:
            return False
        data = data[part]
    return True


def of(config) -> Sources:
    """The files an Invoke Config read; none for a plain mapping (tests)."""
    files = []
    for level in LEVELS:
        path = getattr(config, f"_{level}_path", None) if hasattr(config, "_set") else None
        data = getattr(config, f"_{level}", None) if path else None
        if path and isinstance(data, Mapping) and data:
            files.append((Path(path).resolve(), data))
    # The project's folder: its own settings file's, else the strongest file's, else here.
    project = getattr(config, "_project_path", None) if hasattr(config, "_set") else None
    if project:
        root = Path(project).resolve().parent
    else:
        root = files[0][0].parent if files else Path.cwd()
    return Sources(tuple(files), root)
