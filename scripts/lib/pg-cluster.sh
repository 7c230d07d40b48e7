# Sourced by the benchmark scripts: pg_start DIR PORT makes a throw-away
# PostgreSQL cluster in DIR on 127.0.0.1:PORT (Debian's postgresql; as user
# postgres when run as root) with a database `tollgate`, and exports
# TOLLGATE_STORE_ENGINE / TOLLGATE_STORE_POSTGRES_URL for it; pg_stop stops
# it; psql runs the client on it.
pg_start() {
  PGDIR=$1; PGPORT=$2
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir -p "$PGDIR"
  AS=(); if [ "$(id -u)" = 0 ]; then chown postgres "$PGDIR"; AS=(runuser -u postgres --); fi
  "${AS[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U tollgate --auth=trust --no-sync >/dev/null
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_wal_size=8GB" start >/dev/null
  psql -d postgres -c "CREATE DATABASE tollgate" >/dev/null
  export TOLLGATE_STORE_ENGINE=postgres TOLLGATE_STORE_POSTGRES_URL=postgres://tollgate@127.0.0.1:$PGPORT/tollgate
}
pg_stop() {
  [ -n "${PGDIR:-}" ] && "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast stop >/dev/null || true
}
psql() { command psql -h 127.0.0.1 -p "$PGPORT" -U tollgate -X -q -A -t "$@"; }
