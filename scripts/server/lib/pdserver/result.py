"""Results as data: every answer ends with one line, RESULT_PREFIX and a JSON object.

A verb's handler returns a Result (its exit status and what it found); bin/deploy
(main.py) prints it as the last line on stderr, after the human lines (stdout stays
exactly what it was: a history's JSON lines, a dump, check's facts), and the client
reads it in one place (pushdeploy/output.py). Every result has the verb, the environment,
the outcome and the exit status; a verb adds its own fields (a deploy: version,
previous, serving, failed_step, run; status: version, deploying; check: its facts).
"""

from __future__ import annotations

from . import facts

OUTCOMES = {
    0: "ok",
    facts.EXIT_USAGE: "refused",
    facts.EXIT_OLDER: "older",
    facts.EXIT_BUSY: "busy",
    facts.EXIT_OUTDATED: "outdated",
}


class Result:
    """A handler's answer: its exit status and its data. (A plain class: dataclasses
    would cost every request several milliseconds of imports.)"""

    __slots__ = ("code", "data")

    def __init__(self, code: int = 0, data: dict | None = None):
        self.code, self.data = code, dict(data or {})

    def __repr__(self) -> str:
        return f"Result({self.code}, {self.data!r})"


def outcome(code: int) -> str:
    return OUTCOMES.get(code, "failed")


def line(verb: str, env: str, result: Result) -> str:
    """The result line: the common fields, then the verb's own (a run's outcome is its record's)."""
    import json

    fields = {"verb": verb, "env": env, "outcome": outcome(result.code), "exit": result.code}
    fields.update({key: value for key, value in result.data.items() if value is not None})
    return facts.RESULT_PREFIX + json.dumps(fields, sort_keys=True)
