"""A request's words, checked: what bin/deploy was asked, or why not (exit 64).

Pure: no I/O. ``parse(words, now)`` turns bin/deploy's arguments into a Request,
or raises Refused. The client's requests (pushdeploy/requests.py) are built to pass
here; tests hold both sides to it.
"""

from __future__ import annotations

import collections
import re

from . import facts

_NUMBER = re.compile(r"^[0-9]{1,10}$")
_ANY = re.compile(r"^.*$", re.S)  # the word already matched facts.ARG_RE

# Every option a verb may take: its value's pattern, or None for a bare flag.
OPTIONS = {
    "id": facts.ID_RE,
    "wait": _NUMBER,
    "expect": _ANY,
    "to": _ANY,  # a version: checked against the environment's pattern later
    "limit": _NUMBER,
    "follow": None,
    "force": None,
    "maintenance": None,
    "skip-migrate": None,
    "order": _NUMBER,
    "by": _ANY,
    "url": _ANY,
    "fresh": None,
    "from": facts.ENV_RE,
    "volumes": None,
    "keep-good": None,
    "restore-db": None,
    "rollback": None,
    "reason": _ANY,  # words joined by "+" (the client's reason, spaces and all)
}

_RUN = ("id", "wait", "by", "url", "expect")


# Named tuples rather than dataclasses: bin/deploy starts once a request, and importing
# dataclasses would cost it 7 ms of a 25 ms start.
class Verb(collections.namedtuple("Verb", "usage words options", defaults=((),))):
    """usage: what follows the verb; words: positional words after ENV (-1: no ENV;
    manage: at least one, the rest its own); options: the options it takes."""

    __slots__ = ()


VERBS = {
    "deploy": Verb(
        "ENV VERSION [--id=ID] [--wait=S] [--force] [--maintenance] [--order=N] [--skip-migrate] [--by=WHO] [--url=URL] [--expect=HASH]",
        1,
        _RUN + ("force", "maintenance", "order", "skip-migrate"),
    ),
    "rollback": Verb(
        "ENV [--to=VERSION] [--keep-good] [--restore-db] [--maintenance] [--id=ID] [--wait=S] [--skip-migrate] [--by=WHO] [--url=URL] [--expect=HASH]",
        0,
        _RUN + ("to", "skip-migrate", "maintenance", "keep-good", "restore-db"),
    ),
    "status": Verb("ENV [--expect=HASH]", 0, ("expect",)),
    "history": Verb("ENV [--limit=N]", 0, ("limit", "expect")),
    "logs": Verb("ENV [--follow]", 0, ("follow", "expect")),
    "maintenance": Verb("ENV on|off", 1, ("expect", "by")),
    "backups": Verb("ENV", 0, ("expect",)),
    "check": Verb("ENV", 0, ("expect",)),
    "manage": Verb("ENV [--expect=HASH] NAME ARGS...", 1, ("expect", "by")),
    "plan": Verb(
        "ENV VERSION [--order=N] [--maintenance] [--skip-migrate] [--force] [--expect=HASH], or ENV --rollback [--to=VERSION] [--restore-db]",
        1,
        ("order", "maintenance", "skip-migrate", "force", "expect", "rollback", "to", "restore-db"),
    ),
    "version": Verb("", -1),
    "pull-status": Verb("ENV [--expect=HASH]", 0, ("expect",)),
    "pull": Verb("ENV", 0),
    "cron-status": Verb("ENV [--expect=HASH]", 0, ("expect",)),
    "cron": Verb("ENV NAME", 1),
    "review-up": Verb("TEMPLATE-N VERSION [--id=ID] [--by=WHO] [--url=URL] [--expect=HASH]", 1, _RUN),
    "review-down": Verb("TEMPLATE-N [--expect=HASH]", 0, ("expect", "by", "url")),
    "review-list": Verb("TEMPLATE [--expect=HASH]", 0, ("expect",)),
    "db-dump": Verb("ENV [--fresh]", 0, ("fresh", "expect")),
    "db-restore": Verb("ENV --from=SOURCE [--by=WHO] [--url=URL]", 0, ("from", "by", "url", "expect")),
    "env-push": Verb("ENV [--by=WHO] [--expect=HASH]", 0, ("by", "expect")),
    "tls-export": Verb("ENV", 0),
    "tls-import": Verb("ENV", 0),
    "teardown": Verb("ENV [--volumes] [--by=WHO]", 0, ("volumes", "by")),
    "mark": Verb("ENV VERSION bad|good [--reason=WORDS] [--by=WHO] [--expect=HASH]", 2, ("reason", "by", "expect")),
}


class Refused(Exception):
    """A request bin/deploy will not run: the message says what to send instead."""

    def __init__(self, message: str, code: int = facts.EXIT_USAGE):
        super().__init__(message)
        self.code = code


class Request(collections.namedtuple("Request", "verb env words options key", defaults=("", (), None, None))):
    """A checked request: words are the positional words after ENV (manage: NAME ARGS...),
    options {name: value}, key the deploy key's name when the entrypoint gave one."""

    __slots__ = ()

    def option(self, name: str, default: object = None) -> object:
        return (self.options or {}).get(name, default)

    @property
    def template(self) -> str:
        """The review template a review verb works on ('' for other verbs)."""
        if self.verb == "review-list":
            return self.env
        match = facts.REVIEW_RE.search(self.env) if self.verb in facts.REVIEW_VERBS else None
        return match.group(1) if match else ""


def split_key(argv) -> tuple[str | None, list]:
    """bin/deploy [--key=NAME] VERB ...: the entrypoint puts the key's name first."""
    argv = list(argv)
    if argv and argv[0].startswith("--key="):
        name = argv[0][len("--key=") :]
        if not facts.matches(facts.KEY_RE, name):
            raise Refused(f"invalid key name '{name}'")
        return name, argv[1:]
    return None, argv


def parse(argv, now: float) -> Request:
    """Check bin/deploy's arguments ([--key=NAME] VERB ENV WORDS... OPTIONS...) into a Request."""
    key, words = split_key(argv)
    if not words:
        raise Refused("usage: deploy VERB ENV [OPTIONS] (deploy --help lists them)")
    verb, rest = words[0], words[1:]
    spec = VERBS.get(verb)
    if spec is None:
        raise Refused(f"unknown command '{verb}' (one of: {' '.join(facts.VERBS)})")
    if len(words) > facts.MAX_WORDS:
        raise Refused(f"more than {facts.MAX_WORDS} words")
    if spec.words < 0:
        if rest:
            raise Refused(f"usage: {verb}")
        return Request(verb, key=key)
    if not rest or rest[0].startswith("--"):
        raise Refused(f"usage: {verb} {spec.usage}")
    env, rest = rest[0], rest[1:]
    _check_env(verb, env)
    for word in rest:
        if not facts.matches(facts.ARG_RE, word):
            raise Refused(f"invalid argument '{word}'")
    if verb == "manage":
        options, words_ = _manage_words(rest, spec)
    else:
        options, words_ = _options(verb, spec, rest)
        rollback_plan = verb == "plan" and options.get("rollback") and not words_  # its version is the rollback's
        if len(words_) != spec.words and not rollback_plan:
            raise Refused(f"usage: {verb} {spec.usage}")
    _check_values(verb, words_, options, now)
    return Request(verb, env, tuple(words_), options, key)


def _check_env(verb: str, env: str) -> None:
    if verb in ("review-up", "review-down"):
        if not facts.matches(facts.REVIEW_RE, env):
            raise Refused(
                f"invalid review environment '{env}': review environments are named TEMPLATE-N for pull request N (e.g. review-12)"
            )
    elif not facts.matches(facts.ENV_RE, env):
        raise Refused(f"invalid environment name '{env}'")


def _option(verb: str, spec: Verb, word: str) -> tuple[str, object]:
    name, has_value, value = word[2:].partition("=")
    if name not in spec.options:
        takes = " ".join("--" + option for option in spec.options) or "none"
        raise Refused(f"unknown option '{word}' for {verb} (its options: {takes})")
    pattern = OPTIONS[name]
    if pattern is None:
        if has_value:
            raise Refused(f"unknown option '{word}': --{name} takes no value")
        return name, True
    if not has_value or not facts.matches(pattern, value):
        if name == "id":
            raise Refused(f"invalid deploy id '{value}'")
        raise Refused(f"unknown option '{word}': --{name}=VALUE, VALUE {_describe(name)}")
    return name, int(value, 10) if pattern is _NUMBER else value


def _describe(name: str) -> str:
    return {"from": "an environment name"}.get(name, "a whole number" if OPTIONS[name] is _NUMBER else "a word")


def _options(verb: str, spec: Verb, rest) -> tuple[dict, list]:
    options, words = {}, []
    for word in rest:
        if word.startswith("--"):
            name, value = _option(verb, spec, word)
            options[name] = value
        else:
            words.append(word)
    return options, words


def _manage_words(rest, spec: Verb) -> tuple[dict, list]:
    """manage ENV [--expect=HASH] [--by=WHO] NAME ARGS...: from NAME on, the words are the command's."""
    options = {}
    while rest and rest[0].startswith("--"):
        name, value = _option("manage", spec, rest[0])
        options[name] = value
        rest = rest[1:]
    if not rest:
        raise Refused("usage: manage ENV [--expect=HASH] NAME ARGS...")
    name, args = rest[0], rest[1:]
    for arg in args:
        if changes_django_setup(arg):
            raise Refused(
                f"refused: `{name}` does not accept the argument '{arg}': {' and '.join(facts.MANAGE_FORBIDDEN_OPTIONS)} are never passed"
            )
    return options, list(rest)


def changes_django_setup(word: str) -> bool:
    """--settings=X, --pythonpath X, or a prefix Django's parser would take for one (--set=X)."""
    name = word.split("=", 1)[0]
    return len(name) >= 3 and any(option.startswith(name) for option in facts.MANAGE_FORBIDDEN_OPTIONS)


def _check_values(verb: str, words, options: dict, now: float) -> None:
    if verb == "maintenance" and words[0] not in ("on", "off"):
        raise Refused("usage: maintenance ENV on|off")
    if verb == "mark" and words[1] not in ("bad", "good"):
        raise Refused("usage: mark ENV VERSION bad|good [--reason=WORDS]")
    if verb in ("deploy", "plan", "review-up", "mark") and words and not facts.matches(facts.VERSION_RE, words[0]):
        raise Refused(f"invalid version '{words[0]}': a Docker tag is [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
    order = options.get("order")
    if order is not None and order > now + facts.MAX_ORDER_AHEAD:
        raise Refused(
            f"--order={order} is more than a day ahead of this server's clock ({int(now)}): the order is the build's commit time in seconds; check the build machine's clock"
        )
    if verb == "db-restore" and "from" not in options:
        raise Refused("usage: db-restore ENV --from=SOURCE")
