"""bin/deploy: check the request, refuse it or answer it, else hand it to lib/deploy.sh.

Every request passes here first, whatever runs it: its words (request.py), then
the refusals that read the server (guard.py). A refusal is exit 64 with nothing
changed. The verbs already in Python answer here (verbs.py); the rest run in
bash, lib/deploy.sh, which checks the words again.
"""

from __future__ import annotations

import os
import sys
import time

from . import guard, run, verbs
from .request import Refused, parse, split_key

# Not requests of the deploy account: help, the detached worker (started by a run
# with a token only it knows) and bin/install's check after installing.
INTERNAL = ("-h", "--help", "__run", "setup-check")


def main(argv, now=time.time) -> int:
    os.umask(0o077)
    if argv and argv[0] in INTERNAL:
        return hand_over(argv)
    try:
        request = parse(argv, now())
        why = guard.refusal(request)
        if why:
            raise Refused(why)
        handler = verbs.HANDLERS.get(request.verb)
        answer = handler(request) if handler else run.HAND_OVER
        sys.stdout.flush()
    except Refused as refused:
        sys.stdout.flush()
        print(f"pushdeploy: {refused}", file=sys.stderr)
        return refused.code
    except BrokenPipeError:  # the reader went away (a dropped connection, `| head`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if answer is run.HAND_OVER:
        return hand_over(split_key(argv)[1])
    return answer


def hand_over(words) -> int:
    """Run lib/deploy.sh in this process (same pid: sudo's child, the run's pid file)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv("/bin/bash", ["bash", os.path.join(run.LIB, "deploy.sh"), *words])
    return 1  # not reached
