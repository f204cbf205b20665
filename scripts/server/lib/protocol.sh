# shellcheck shell=bash disable=SC2034
# Facts that the client (deploy/protocol.py) and the server scripts must agree on.
# This file is the single source of truth: bash sources it, Python parses it.
# Keep it to plain NAME='value' lines (no expansions): both sides read them literally.
# Regular expressions are POSIX ERE, which bash's [[ =~ ]] and Python's re read alike.

# Where the server side lives. Every directory here is root-owned.
PD_PREFIX='/opt/pushdeploy'
PD_ETC='/etc/pushdeploy'
PD_STATE='/var/lib/pushdeploy'

# The server side: every file installed under PD_PREFIX, in this order. The
# installer installs them, both sides hash them (in this order) to agree on the version.
PD_SERVER_FILES='bin/deploy bin/entrypoint bin/install lib/protocol.sh lib/config.sh lib/steps.sh lib/switch.sh lib/recreate.sh lib/order.sh lib/history.sh lib/history.py lib/detach.sh'

# Traffic reaches one slot of the web service at a time: the proxy routes to the
# DNS name WEBSERVICE-SLOT, the second slot while APP_DIR/PD_ROUTING_DIR/SLOT exists.
PD_SLOTS='blue green'
PD_ROUTING_DIR='routing'

# What the deploy account may ask for (the first word of its SSH command).
PD_VERBS='deploy rollback status history logs maintenance backups check version'

# An environment name, as in `deploy staging 1.4.0`.
PD_ENV_RE='^[a-z][a-z0-9-]{0,31}$'

# Any version we accept must be a valid Docker tag, whatever the environment's own pattern.
PD_VERSION_RE='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'

# Every word after the verb: a plain word, or an option --name[=value].
PD_ARG_RE='^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|--[a-z][a-z-]{0,31}(=[A-Za-z0-9_][A-Za-z0-9_.:/@+-]{0,199})?)$'

# A deploy's id (it names files on the server, so no dots or slashes).
PD_ID_RE='^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'

# The longest command line the entrypoint reads, and the most words.
PD_MAX_COMMAND='1024'
PD_MAX_WORDS='12'

# Exit codes that mean something to the client.
PD_EXIT_USAGE='64'
PD_EXIT_OLDER='65'
PD_EXIT_BUSY='75'
PD_EXIT_OUTDATED='78'
