#!/bin/bash
# Entry point of the sandbox's postgres image, with the official image's contract:
#   POSTGRES_PASSWORD  required on first start (the superuser's password)
#   POSTGRES_USER      superuser to create (default postgres)
#   POSTGRES_DB        database to create (default: POSTGRES_USER)
# On an empty $PGDATA it runs initdb as the postgres user, allows password
# (scram-sha-256) logins from any host, listens on all addresses, creates the
# database and runs /docker-entrypoint-initdb.d/*.sql and *.sh. It then execs
# postgres as the container's main process, so stop signals reach it directly.
# Any other command (psql, pg_dump, bash) runs as given.
set -euo pipefail

readonly SOCKET_DIR=/run/postgresql
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
# The server that runs during initialisation listens here only, so that
# pg_isready (a health check) fails until the real server is up.
INIT_SOCKET_DIR=
readonly INITDB_DIR=/docker-entrypoint-initdb.d

die() {
	printf 'docker-entrypoint: error: %s\n' "$*" >&2
	exit 1
}

# As root: give postgres its directories (a fresh volume may be root-owned).
prepare_directories() {
	install -d -o postgres -g postgres -m 0700 "$PGDATA"
	install -d -o postgres -g postgres -m 2777 "$SOCKET_DIR"
	chown postgres:postgres "$PGDATA"
	chmod 0700 "$PGDATA"
}

superuser() {
	printf '%s\n' "${POSTGRES_USER:-postgres}"
}

database() {
	printf '%s\n' "${POSTGRES_DB:-$(superuser)}"
}

run_initdb() {
	local pwfile
	[[ -n ${POSTGRES_PASSWORD:-} ]] ||
		die "the database is not initialised and POSTGRES_PASSWORD is empty; set POSTGRES_PASSWORD (and POSTGRES_USER, POSTGRES_DB)"
	pwfile=$(mktemp)
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	initdb --username="$(superuser)" --pwfile="$pwfile" --encoding=UTF8 \
		--auth-local=trust --auth-host=scram-sha-256 >/dev/null
	rm -f "$pwfile"
}

# Other containers on the network reach the server by name, from any address.
allow_network_logins() {
	printf '\n# Added by docker-entrypoint.sh\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
	printf "\n# Added by docker-entrypoint.sh\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
}

start_private_server() {
	INIT_SOCKET_DIR=$(mktemp -d)
	export PGHOST=$INIT_SOCKET_DIR
	pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$INIT_SOCKET_DIR" start >/dev/null
}

stop_private_server() {
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	unset PGHOST
	rmdir "$INIT_SOCKET_DIR"
}

create_database() {
	local db
	db=$(database)
	[[ $db == postgres ]] && return 0
	psql -v ON_ERROR_STOP=1 -q --username "$(superuser)" --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db";'
}

run_init_scripts() {
	local file
	shopt -s nullglob
	for file in "$INITDB_DIR"/*; do
		case $file in
		*.sql) psql -v ON_ERROR_STOP=1 -q --username "$(superuser)" --dbname "$(database)" -f "$file" ;;
		*.sh) bash "$file" ;;
		*) printf 'docker-entrypoint: ignoring %s\n' "$file" >&2 ;;
		esac
	done
	shopt -u nullglob
}

initialise_cluster() {
	printf 'docker-entrypoint: initialising %s (user %s, database %s)\n' "$PGDATA" "$(superuser)" "$(database)" >&2
	run_initdb
	allow_network_logins
	start_private_server
	create_database
	run_init_scripts
	stop_private_server
	printf 'docker-entrypoint: initialisation done; starting postgres\n' >&2
}

main() {
	if [[ ${1:-} == -* ]]; then
		set -- postgres "$@"
	fi
	if [[ ${1:-} != postgres ]]; then
		exec "$@"
	fi
	if [[ $(id -u) == 0 ]]; then
		prepare_directories
		exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
	fi
	if [[ ! -s $PGDATA/PG_VERSION ]]; then
		initialise_cluster
	fi
	exec "$@"
}

main "$@"
