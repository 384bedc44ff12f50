#!/usr/bin/env bash
# Runs a command with a PostgreSQL server answering at $PGHOST:$PGPORT.
# If one answers (e.g. the machine's own on 127.0.0.1:5432) it is used as is. Otherwise a private
# cluster is created under .local/pg (initdb/pg_ctl from PATH or /usr/lib/postgresql/*/bin),
# started on that address for the duration of the command, and stopped cleanly afterwards.
set -euo pipefail
. "$(dirname "$0")/env.sh"

port_open() { (exec 3<>"/dev/tcp/$PGHOST/$PGPORT") 2>/dev/null; }

pg_bindir() {
  local d
  for d in "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /none/pg_ctl)")" /usr/lib/postgresql/*/bin; do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  return 1
}

if port_open; then
  exec "$@"
fi

BIN="$(pg_bindir)" || {
  echo "error: nothing answers at $PGHOST:$PGPORT and no initdb/pg_ctl was found." >&2
  echo "       Install PostgreSQL 15+ (apt-get install postgresql) or point PGHOST/PGPORT at a server." >&2
  exit 1
}
PGBASE="$LOCAL_DIR/pg"
mkdir -p "$PGBASE"
# initdb refuses to run as root: use the postgres system account then, in a folder it can reach.
as_owner=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || { echo "error: running as root needs a 'postgres' system user for initdb" >&2; exit 1; }
  chown postgres "$PGBASE"
  if ! runuser -u postgres -- test -w "$PGBASE"; then
    PGBASE="/var/tmp/crm-erp-bridge-pg-$(id -u postgres)"   # a parent folder is closed to other users
    mkdir -p "$PGBASE" && chown postgres "$PGBASE" && chmod 700 "$PGBASE"
  fi
  as_owner=(runuser -u postgres --)
fi
DATA="$PGBASE/data-$PGPORT"
RUN="$PGBASE/run"
"${as_owner[@]}" mkdir -p "$RUN"
if [ ! -f "$DATA/PG_VERSION" ]; then
  echo "==> creating a private PostgreSQL cluster in $DATA"
  "${as_owner[@]}" "$BIN/initdb" -D "$DATA" -U "$PGUSER" --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
fi
echo "==> starting private PostgreSQL on $PGHOST:$PGPORT"
"${as_owner[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$PGBASE/server-$PGPORT.log" -w -t 60 \
  -o "-c listen_addresses=$PGHOST -c port=$PGPORT -c unix_socket_directories=$RUN -c fsync=off" start >/dev/null
stop_pg() {
  echo "==> stopping private PostgreSQL on $PGHOST:$PGPORT"
  "${as_owner[@]}" "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || true
  if [ "${PG_PRIVATE_EPHEMERAL:-0}" = 1 ]; then rm -rf "$DATA" "$PGBASE/server-$PGPORT.log"; fi  # tests
}
trap stop_pg EXIT
"$@"
