#!/bin/bash
# The official image's start-up, for what compose.yaml uses: on an empty volume, a cluster
# whose superuser is POSTGRES_USER with POSTGRES_PASSWORD, and the database POSTGRES_DB;
# local connections trusted, connections over the network by password. Then the server,
# as the postgres user, in the container's foreground.
set -euo pipefail
: "${POSTGRES_PASSWORD:?the postgres image needs POSTGRES_PASSWORD}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    chown postgres "$password_file"
    as_postgres initdb -D "$PGDATA" -U "$user" --pwfile="$password_file" -E UTF8 \
        --auth-local=trust --auth-host=scram-sha-256
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$database" != postgres ]; then
        as_postgres pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start
        as_postgres psql -v ON_ERROR_STOP=1 -U "$user" -d postgres \
            -c "CREATE DATABASE \"$database\""
        as_postgres pg_ctl -D "$PGDATA" -w -m fast stop
    fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    postgres -D "$PGDATA" -c listen_addresses='*'
