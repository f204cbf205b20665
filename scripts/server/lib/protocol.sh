# shellcheck shell=bash disable=SC2034
# Facts that the client (pushdeploy/protocol.py) and the server scripts must agree on.
# This file is the single source of truth: bash sources it, Python parses it.
# Keep it to plain NAME='value' lines (no expansions): both sides read them literally.
# Regular expressions are POSIX ERE, which bash's [[ =~ ]] and Python's re read alike.

# Where the server side lives. Every directory here is root-owned.
PD_PREFIX='/opt/pushdeploy'
PD_ETC='/etc/pushdeploy'
PD_STATE='/var/lib/pushdeploy'

# The server side: every file installed under PD_PREFIX, in this order, then every
# *.py file of PD_SERVER_FOLDERS (sorted: a strategy is added by adding its file). The
# installer installs them, both sides hash them (in this order) to agree on the version.
PD_SERVER_FILES='bin/deploy bin/entrypoint bin/install lib/protocol.sh lib/history.py lib/pull.py lib/notify.py lib/swarm.py lib/pdserver/__init__.py lib/pdserver/facts.py lib/pdserver/request.py lib/pdserver/keys.py lib/pdserver/conf.py lib/pdserver/guard.py lib/pdserver/main.py lib/pdserver/result.py lib/pdserver/verbs.py lib/pdserver/schema.py lib/pdserver/env.py lib/pdserver/expect.py lib/pdserver/lock.py lib/pdserver/run.py lib/pdserver/compose.py lib/pdserver/order.py lib/pdserver/status.py lib/pdserver/plan.py lib/pdserver/runs.py lib/pdserver/worker.py lib/pdserver/pipeline.py lib/pdserver/release.py lib/pdserver/containers.py lib/pdserver/drain.py lib/pdserver/slots.py lib/pdserver/warm.py lib/pdserver/recreate.py lib/pdserver/stackfile.py lib/pdserver/stack.py lib/pdserver/review.py lib/pdserver/front.py lib/pdserver/refresh.py lib/pdserver/teardown.py lib/pdserver/marks.py lib/pdserver/restoredb.py lib/pdserver/envpush.py lib/pdserver/agent.py lib/pdserver/cron.py lib/pdserver/roles.py lib/pdserver/tls.py lib/pdserver/acme.py lib/pdserver/install.py'
PD_SERVER_FOLDERS='lib/pdserver/strategies'

# Traffic reaches one slot of the web service at a time: the proxy routes to the
# DNS name WEBSERVICE-SLOT, the second slot while APP_DIR/PD_ROUTING_DIR/SLOT exists.
PD_SLOTS='blue green'
PD_ROUTING_DIR='routing'

# What the deploy account may ask for (the first word of its SSH command).
PD_VERBS='deploy rollback status history logs maintenance backups check version manage plan pull-status review-up review-down review-list mark cron-status'

# Verbs for the admin connection only (root, or an admin through sudo): never the
# deploy account, whose entrypoint refuses them and bin/deploy again. The database's
# (inv db.refresh), then the server's (inv server.teardown, inv secrets.push).
PD_ADMIN_VERBS='db-dump db-restore'
PD_SERVER_VERBS='teardown env-push tls-export tls-import'

# What a named deploy key may do only if its verbs list it as well (a key given every verb
# gets none of them): rollback --restore-db replaces the database, losing recent writes.
PD_KEY_RIGHTS='restore-db'

# A review environment: an instance of a review template (an environment with
# review_template: true), named TEMPLATE-N for pull request N, e.g. review-12.
PD_REVIEW_RE='^([a-z][a-z0-9]{0,15})-([1-9][0-9]{0,5})$'

# An environment name, as in `deploy staging 1.4.0`.
PD_ENV_RE='^[a-z][a-z0-9-]{0,31}$'

# Any version we accept must be a valid Docker tag, whatever the environment's own pattern.
PD_VERSION_RE='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'

# Every word after the verb: a plain word, or an option --name[=value].
PD_ARG_RE='^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|--[a-z][a-z-]{0,31}(=[A-Za-z0-9_][A-Za-z0-9_.:/@+-]{0,199})?)$'

# A deploy's id (it names files on the server, so no dots or slashes).
PD_ID_RE='^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'

# A deploy key's name (invoke.yaml's deploy.keys): the entrypoint gets it from the
# key's authorized_keys line as --key=NAME; bin/deploy holds it to the key's scope,
# written by `inv server.setup` to PD_KEYS_FILE (one JSON object: NAME -> scope).
PD_KEY_RE='^[a-z][a-z0-9_-]{0,31}$'

# A secret's name (inv secrets.push), and the names no secret may set: the deploy's own.
PD_SECRET_NAME_RE='^[A-Z_][A-Z0-9_]{0,127}$'
PD_SECRET_RESERVED='VERSION IMAGE'

# A private registry (invoke.yaml's registry:): its host[:port], and the user Docker logs in as.
PD_REGISTRY_RE='^[a-z0-9]([a-z0-9.-]{0,252}[a-z0-9])?(:[0-9]{1,5})?$'
PD_REGISTRY_USER_RE='^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$'
PD_KEYS_FILE='/etc/pushdeploy/keys.json'

# --order (a build's commit time, in seconds since the epoch) may be at most this
# far ahead of the server's clock: a stored order far in the future would refuse
# every later build as older.
PD_MAX_ORDER_AHEAD='86400'

# The longest command line the entrypoint reads, and the most words.
PD_MAX_COMMAND='1024'
PD_MAX_WORDS='12'

# Exit codes that mean something to the client.
PD_EXIT_USAGE='64'
PD_EXIT_OLDER='65'
PD_EXIT_BUSY='75'
PD_EXIT_OUTDATED='78'
PD_EXIT_FULL='69'

# A deploy's, rollback's or review-up's answer ends with one line of data: this prefix,
# then a JSON object (outcome, kind, version, previous, serving, failed_step, run). The
# client reads it instead of the sentences above it, and does not show it.
PD_RESULT_PREFIX='pushdeploy-result '

# Django management commands (inv manage, before_switch/after_switch hooks): a
# command's name, and the names no allowlist may hold (they run arbitrary code or SQL).
# Their arguments are words of PD_ARG_RE, each also matching one of the command's own patterns,
# and never an option that points Django at other settings or code (nor an abbreviation
# of one: Django's parser accepts unambiguous prefixes such as --set=).
PD_MANAGE_NAME_RE='^[a-z][a-z0-9_]{0,63}$'
PD_MANAGE_FORBIDDEN='shell dbshell shell_plus runscript dumpdata loaddata flush sqlflush diffsettings runserver testserver'
PD_MANAGE_FORBIDDEN_OPTIONS='--settings --pythonpath'

# Pull mode: the channel is a tag of the web image that CI moves; the agent deploys
# what it points to as CHANNEL-<first PD_PIN_HEX hex digits of its digest>, pinned.
PD_CHANNEL_RE='^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$'
PD_PIN_HEX='12'

# engine: swarm backups: the image (with pg_dump) a one-off container runs, as invoke.yaml's backup_image.
PD_IMAGE_RE='^[a-z0-9][a-z0-9._/:-]{0,254}(@sha256:[0-9a-f]{64})?$'
