"""pushdeploy's server side, in Python (standard library only, Python 3.8+).

Run as root by bin/deploy (``python3 -I``) from root-owned files under
/opt/pushdeploy; the client loads the shared modules (facts) from here too, so
both sides read one copy. Modules, one concern each:

  facts.py    what client and server agree on (read from lib/protocol.sh)
  request.py  a request's words checked into a Request, or refused (pure)
  keys.py     what each deploy key may ask for (pure)
  conf.py     reading an environment's settings, /etc/pushdeploy/ENV.conf
  guard.py    the refusals that read the server: templates, review targets, key scopes
  main.py     bin/deploy: check, refuse or answer (and --help, the worker, setup-check)
  verbs.py    the small verbs, and HANDLERS: every verb's handler
  result.py   results as data: a handler's Result, printed as the answer's last line
  schema.py   one table of settings: each key's default, kind, check and invoke.yaml name (both sides)
  env.py      an environment's settings checked; .env's VERSION read and written
  expect.py   --expect: the server side and settings the client expects
  lock.py     the environment's lock (flock) and who holds it
  run.py      the one place a process starts (a stop lets the command in hand finish)
  compose.py  docker and compose commands, built (pure)
  order.py    version order (sort -V, semver, builds, pinned versions)
  status.py   status, the last deploy, dead runs
  plan.py     what a deploy would do (plan), the order check
  runs.py     deploy and rollback: the lock, detached runs, reattaching, following
  worker.py   the detached run: settles dead runs, deploys, ends recorded whatever stops it
  pipeline.py THE deploy, one sequence for every strategy; the history, notifications
  strategies/ one module per strategy (switch_NAME, engine_NAME), found by name
  release.py  what runs in the app's image: migrate and collectstatic, hooks, static pruning
  containers.py  the compose engine's steps before the switch; container facts
  slots.py    strategy: the zero-downtime switch between two slots
  drain.py    retiring containers without cutting a request
  warm.py     the previous version's containers kept ready for an instant rollback
  recreate.py strategy: recreate in place (a short, measured restart)
  stack.py    strategy: a swarm stack (stack deploy, converge, whole-stack undo)
  stackfile.py  the stack file rendered and checked; one-off containers on its network
  review.py   review environments (review-up, review-down)
  front.py    the review front proxy and its routes
  refresh.py  db-dump and db-restore: moving a database, scrubbed
  teardown.py teardown (admin only): an environment removed from this host
  agent.py    pull mode's agent (bin/deploy pull), and its systemd timer or cron entry
  tls.py      HTTPS at the proxy: the certificate installed with nginx's lines; reloads; expiry
  acme.py     tls.acme: certbot obtains and renews; a fleet's copies (tls-export, tls-import)
  install.py  bin/install: everything server.setup puts on a host, changed only where it differs
"""
