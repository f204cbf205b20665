"""bin/deploy: check the request, refuse it or answer it.

Every request passes here first: its words (request.py), then the refusals that
read the server (guard.py), then its verb (verbs.HANDLERS). A refusal is exit 64
with nothing changed. Every answer ends with its result as data (result.py), the last line on stderr:
stdout stays what it always was (a history's JSON lines, a dump). Besides the deploy account's verbs, three words are the
server's own: __run (the detached worker, started by a run with a token only it
knows), setup-check (bin/install, as root), tls-reload (root: a certificate renewed) and --help.
"""

from __future__ import annotations

import os
import re
import sys
import time

from . import facts, guard, verbs
from .request import Refused, parse
from .result import Result, line

USAGE = """usage: deploy VERB ENV [OPTIONS]

  deploy ENV VERSION [--id=ID] [--wait=SECONDS] [--force] [--maintenance] [--order=N] [--skip-migrate]
                     [--by=WHO] [--url=BUILD_URL] [--expect=HASH]
        pull VERSION, back up the database (if configured), migrate and collect static
        files with it, start it beside the running version, and move traffic once it is
        healthy; on any failure the old version keeps serving. With `switch: recreate`
        it recreates web and proxy in place instead (a short restart, measured); with
        `engine: swarm` it deploys the stack and watches it converge.
        Refuses a version older than the deployed one unless --force.
  rollback ENV [--to=VERSION] [--keep-good] [--restore-db] [--id=ID] [--by=WHO] [--url=BUILD_URL] [--expect=HASH]
        go back to the version that served before the current one (or VERSION), past
        releases marked bad; unapply the migrations applied since, or with --restore-db
        restore the backup taken before the deploy that replaced it (writes since are lost).
  status ENV [--expect=HASH]   deployed version, running deploy, services
  history ENV [--limit=N]      the last deploys, one JSON object a line
  logs ENV [--follow]          the last deploy's log
  maintenance ENV on|off       the proxy answers 503 (a page, or JSON) while on
  backups ENV                  the database backups kept on this server
  check ENV                    facts for `inv server.check` (key=value lines)
  manage ENV [--expect=HASH] NAME ARGS...
        one management command of the environment's allowlist in a one-off container
        of the deployed version: its output and exit code.
  plan ENV VERSION [--order=N] [--maintenance] [--skip-migrate] [--force] [--expect=HASH]
        what a deploy of VERSION would do here (key=value lines).
  version                      the hash of this server side
  pull-status ENV [--expect=HASH]  pull mode: the channel, the agent, the last check and change
  pull ENV                     (root only: the pull agent) deploy the channel's image if it moved
  cron-status ENV [--expect=HASH]  the cron jobs: schedule, whether this host runs them, the last run
  cron ENV NAME                (root only: the job's cron entry or timer) run cron job NAME
  review-up TEMPLATE-N VERSION [--id=ID] [--by=WHO] [--url=URL] [--expect=HASH]
        make (or update) the review environment TEMPLATE-N, deploy VERSION there,
        route pr-N.DOMAIN to it; prints its url.
  review-down TEMPLATE-N       remove it: containers, volumes, networks, files, route
  review-list TEMPLATE         live review environments: name, version, created, last deploy, url
  db-dump ENV [--fresh]        (admin only) the newest backup, or a fresh pg_dump, on stdout
  db-restore ENV --from=SRC    (admin only) restore the dump on stdin, migrate, scrub, record
  env-push ENV [--by=WHO]      (admin only) the secrets on stdin into .env: names added/changed/removed
  tls-export ENV               (admin only) a fleet's first host: its ACME certificate (obtained if due) on stdout
  tls-import ENV               (admin only) another host of the fleet: that certificate on stdin, served
  tls-reload ENV               (root only: a renewal's hook) install tls:'s certificate again, reload nginx if it changed
  tls-renew ENV [--force]      (root only: its timer) renew tls.acme's certificate when due (--force: now), serve it
  warm-expire ENV SINCE        (root only: started by a deploy) remove what warm_rollback_keep: running kept, when due

The last line on stderr is the result as data: {prefix}{{"verb": ..., "outcome": ..., "exit": ...}}.
Exit codes: 0 ok, 1 failed, {usage} bad request, {busy} another deploy runs,
{older} older than the deployed version, {outdated} server side or settings differ from the client's.
"""


def main(argv, now=time.time) -> int:
    os.umask(0o077)
    word = argv[0] if argv else ""
    if word in ("-h", "--help"):
        print(
            USAGE.format(
                prefix=facts.RESULT_PREFIX,
                usage=facts.EXIT_USAGE,
                busy=facts.EXIT_BUSY,
                older=facts.EXIT_OLDER,
                outdated=facts.EXIT_OUTDATED,
            ),
            end="",
        )
        return 0
    try:
        if word == "__run":
            from . import worker

            return worker.main(argv[1:])
        if word == "setup-check":
            return setup_check(argv[1:])
        if word == "tls-reload":
            return tls_reload(argv[1:])
        if word == "tls-renew":
            return tls_renew(argv[1:])
        if word == "warm-expire":
            return warm_expire(argv[1:])
        request = parse(argv, now())
        why = guard.refusal(request)
        if why:
            raise Refused(why)
        result = verbs.HANDLERS[request.verb](request)
        sys.stdout.flush()
        print(line(request.verb, request.env, result), file=sys.stderr)
        return result.code
    except Refused as refused:
        sys.stdout.flush()
        print(f"pushdeploy: {refused}", file=sys.stderr)
        if word not in INTERNAL:
            print(line(*_named(argv), Result(refused.code, {"error": str(refused)})), file=sys.stderr)
        return refused.code
    except BrokenPipeError:  # the reader went away (a dropped connection, `| head`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:  # a bug, or the host failing under us: said, and still a result
        if word in INTERNAL:
            raise
        import traceback

        sys.stdout.flush()
        traceback.print_exc()
        what = f"{type(error).__name__}: {error}"
        print(line(*_named(argv), Result(1, {"error": f"internal error: {what}"})), file=sys.stderr)
        return 1


# bin/deploy's own words (the detached worker, the installer's check): their output is a
# run's log or the installer's, not an answer, so they end with no result line.
INTERNAL = ("__run", "setup-check", "tls-reload", "tls-renew", "warm-expire")


def _named(argv) -> tuple:
    """The verb and environment a refused request named, where they are ones (else "")."""
    words = [word for word in argv if not word.startswith("--")]
    verb = words[0] if words and words[0] in verbs.HANDLERS else ""
    env = words[1] if verb and len(words) > 1 and facts.matches(facts.ENV_RE, words[1]) else ""
    return verb, env


def setup_check(words) -> int:
    """bin/install, as root, after installing: what a first deploy would refuse (a swarm's
    stack file), by the environment's strategy."""
    from . import env as envs
    from .pipeline import strategy_for

    return strategy_for(envs.load(words[0] if len(words) == 1 else "")).setup_check()


def tls_reload(words) -> int:
    """`bin/deploy tls-reload ENV` (root: a renewal's hook, an admin): the certificate of tls:
    installed again from its files and served at once if it changed (tls.py), as setup does."""
    if not roots("tls-reload"):
        return facts.EXIT_USAGE
    return setup_check(words)


def tls_renew(words) -> int:
    """`bin/deploy tls-renew ENV [--force]` (root: the timer server.setup installs, an admin):
    tls.acme's certificate renewed by certbot when it is due (--force: now) and served."""
    from . import env as envs
    from .pipeline import strategy_for

    if not roots("tls-renew"):
        return facts.EXIT_USAGE
    if len(words) not in (1, 2) or words[1:] not in ([], ["--force"]):
        print("usage: bin/deploy tls-renew ENV [--force]", file=sys.stderr)
        return facts.EXIT_USAGE
    env = envs.load(words[0])
    if env["TLS"] != "acme":
        print(f"tls-renew: {env.name} has no tls.acme (its certificate is not obtained by pushdeploy)", flush=True)
        return 0
    return strategy_for(env).tls_renew(words[1:] == ["--force"])


def warm_expire(words) -> int:
    """`bin/deploy warm-expire ENV SINCE` (root: started when a deploy keeps the previous
    version running): removes it once warm_rollback has passed (warm.py)."""
    from . import env as envs
    from . import warm

    if not roots("warm-expire"):
        return facts.EXIT_USAGE
    if len(words) != 2 or not facts.matches(re.compile(r"^[0-9]{1,12}([.][0-9]{1,12})?$"), words[1]):
        print("usage: bin/deploy warm-expire ENV SINCE", file=sys.stderr)
        return facts.EXIT_USAGE
    print(warm.expire(envs.load(words[0]), words[1]), flush=True)
    return 0


def roots(word: str) -> bool:
    """WORD is root's own (a timer, a hook, an admin), never the deploy account's through sudo."""
    user = os.environ.get("SUDO_USER", "")
    if os.geteuid() != 0 or (user and os.path.exists(f"/etc/sudoers.d/pushdeploy-{user}")):
        print(
            f"pushdeploy: {word} is root's (a timer, a renewal hook, an admin), not the deploy account's",
            file=sys.stderr,
        )
        return False
    return True
