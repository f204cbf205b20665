"""pushdeploy server side: deploy notifications to the environment's webhooks.

Run by bin/deploy in the background, detached from the deploy (it never waits for
it), as `python3 -I notify.py send WEBHOOKS EVENT HISTORY KEY=VALUE...`:
  WEBHOOKS  root-only file, one `KIND URL` a line (KIND: json or slack), from server.setup
  EVENT     started, or finished: then the event (succeeded, failed, rolled_back) and
            its facts come from the run's record, the last line of HISTORY (a cron job's
            failed run: the last line of its runs.jsonl, kind cron)
Each webhook gets its own thread, at most ATTEMPTS tries of TIMEOUT seconds each,
with backoff, retrying only what may pass later (no answer, 429, 5xx). Output (to
the environment's notify.log) names a webhook by its number and kind, never its
URL: the URL is the secret.
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.request

KINDS = ("json", "slack")
ATTEMPTS = 3
TIMEOUT = 4
BACKOFF = (1, 3)  # seconds before the 2nd and 3rd tries
TAIL_LINES = 15


def read_hooks(path):
    hooks = []
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            kind, _, url = line.strip().partition(" ")
            if kind in KINDS and url.startswith(("http://", "https://")):
                hooks.append((kind, url))
    return hooks


def last_record(path):
    try:
        with open(path, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def event_of(record):
    """What a finished run was: a failed deploy or rollback, a rollback, or a deploy."""
    if record.get("outcome") != "ok":
        return "failed"
    return "rolled_back" if record.get("kind") == "rollback" else "succeeded"


def undone(record):
    """A failed run whose own rollback step succeeded: the old version serves."""
    return any(s.get("name") == "rollback" and s.get("ok") for s in record.get("steps") or [])


def facts_for(event, record, given):
    """The facts of a notification: the run's record (finished) or what bin/deploy gave (started)."""
    facts = dict(given)
    if event != "started":
        facts.update({k: v for k, v in record.items() if k != "steps"})
        facts["event"] = event_of(record)
        if facts["event"] == "failed" and record.get("kind") != "cron":
            facts["serving"] = record.get("previous", "") if undone(record) else "unknown: see `inv deploy.status`"
            facts["log_tail"] = "\n".join(str(record.get("log_tail", "")).splitlines()[-TAIL_LINES:])
    else:
        facts["event"] = "started"
    return facts


def summary(facts):
    where = f"{facts.get('project') or facts.get('env')} on {facts.get('host', '?')}"
    by = facts.get("by") or "unknown"
    version, previous = facts.get("version", "?"), facts.get("previous", "?")
    duration = facts.get("duration")
    took = f" in {float(duration):.1f}s" if duration not in (None, "") else ""
    event = facts["event"]
    if facts.get("kind") == "cron":
        said = facts.get("message") or "failed"
        return f"cron job {facts.get('job')} (manage.py {facts.get('command')}) FAILED on {where}: {said}{took}, on {version}"
    if event == "started":
        text = f"{facts.get('kind', 'deploy')} of {version} to {where} started by {by} (running: {previous})"
    elif event == "succeeded":
        text = f"deployed {version} to {where}{took} (was {previous}), by {by}"
    elif event == "rolled_back":
        text = f"rolled {where} back to {version}{took} (was {previous}), by {by}"
    else:
        text = f"{facts.get('kind', 'deploy')} of {version} to {where} FAILED at {facts.get('failed_step') or '?'}{took}; serving: {facts.get('serving', '?')}; by {by}"
    if facts.get("digest"):
        text += f" [{facts['digest'][:19]}]"
    if facts.get("url"):
        text += f" <{facts['url']}>"
    return text


def payload(kind, facts):
    """The JSON body for one webhook: every fact (json), or Slack's `text` (slack)."""
    text = summary(facts)
    if kind == "slack":
        if facts["event"] == "failed" and facts.get("log_tail"):
            text += "\n```\n" + facts["log_tail"] + "\n```"
        return {"text": text}
    body = {
        key: facts.get(key, "")
        for key in ("event", "env", "project", "host", "kind", "version", "previous", "by", "url", "digest", "time")
    }
    if facts["event"] != "started":
        body.update(outcome=facts.get("outcome", ""), duration=facts.get("duration", ""))
    if facts.get("kind") == "cron":
        body.update(job=facts.get("job", ""), command=facts.get("command", ""), exit=facts.get("exit", ""))
    elif facts["event"] == "failed":
        body.update(
            failed_step=facts.get("failed_step", ""),
            serving=facts.get("serving", ""),
            log_tail=facts.get("log_tail", ""),
        )
    body["text"] = text
    return body


def post(url, body, timeout):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "pushdeploy"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


def deliver(url, body, send=None, sleep=time.sleep, attempts=ATTEMPTS):
    """(ok, tries, what happened). Retries a refused, silent or 5xx/429 receiver, up to attempts."""
    send, what = send or post, ""
    for attempt in range(1, attempts + 1):
        try:
            status = send(url, body, TIMEOUT)
            return True, attempt, f"HTTP {status}"
        except urllib.error.HTTPError as error:
            what = f"HTTP {error.code}"
            if error.code != 429 and error.code < 500:
                return False, attempt, what
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            what = f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
        if attempt < attempts:
            sleep(BACKOFF[min(attempt, len(BACKOFF)) - 1])
    return False, attempts, what


def send_all(hooks, facts, log=print, send=None):
    def one(number, kind, url):
        ok, tries, what = deliver(url, payload(kind, facts), send=send)
        state = "sent" if ok else "NOT sent"
        log(
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {facts['event']} {state} to webhook {number} ({kind}) after {tries} try(ies): {what}"
        )

    threads = [threading.Thread(target=one, args=(n, kind, url), daemon=True) for n, (kind, url) in enumerate(hooks, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main(argv):
    if len(argv) < 5 or argv[1] != "send":
        sys.exit("usage: notify.py send WEBHOOKS EVENT HISTORY KEY=VALUE...")
    hooks, event, history = read_hooks(argv[2]), argv[3], argv[4]
    given = dict(pair.partition("=")[::2] for pair in argv[5:])
    facts = facts_for(event, last_record(history) if event != "started" else {}, given)
    send_all(hooks, facts, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main(sys.argv)
