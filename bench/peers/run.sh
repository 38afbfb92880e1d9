#!/usr/bin/env bash
# Runs the peers benchmark (asynq on Redis, River on PostgreSQL) against
# throwaway stores started here, on loopback only, and removed on exit.
#
#   bench/peers/run.sh [flags for the Go program, e.g. -system river -n 20000 -json]
#
# Redis:      own redis-server on 127.0.0.1:$REDIS_PORT (default 16379),
#             appendonly yes + appendfsync everysec (Redis's common durable
#             setting: the AOF is fsynced once a second, so up to ~1s of
#             acknowledged writes can be lost on a machine crash), RDB
#             snapshots off (save "") so no fork happens mid-run.
# PostgreSQL: own cluster (initdb) in a temp dir on 127.0.0.1:$PG_PORT (default
#             15432), stock durability: fsync on, synchronous_commit on,
#             full_page_writes on (PostgreSQL defaults, not overridden).
#
# Missing redis-server / PostgreSQL server binaries are installed with apt-get.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

REDIS_PORT="${REDIS_PORT:-16379}"
PG_PORT="${PG_PORT:-15432}"

log() { echo "run.sh: $*" >&2; }

as_root() {
	if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

pg_bindir() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
	if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
		echo "$d"
	fi
}

install_missing() {
	local pkgs=()
	command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
	[[ -n "$(pg_bindir)" ]] || pkgs+=(postgresql)
	[[ ${#pkgs[@]} -eq 0 ]] && return 0

	log "installing ${pkgs[*]}"
	# Keep the packages' own services from starting (we run our own servers);
	# only if no policy is in place already, and only for the install.
	local policy=/usr/sbin/policy-rc.d added_policy=""
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
		as_root chmod +x "$policy"
		added_policy=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	if ! as_root apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
		log "apt-get install failed; running apt-get update and retrying"
		as_root apt-get update -q
		as_root apt-get install -y -q --no-install-recommends "${pkgs[@]}"
	fi
	[[ -n $added_policy ]] && as_root rm -f "$policy"
	return 0
}

# Only the results go to stdout: whatever the package manager prints goes to
# stderr (on a fresh machine apt-get's "Reading package lists…" would
# otherwise precede the JSON).
install_missing >&2
PG_BIN=$(pg_bindir)
[[ -n "$PG_BIN" ]] || { log "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"; exit 1; }

WORK=$(mktemp -d -t durable-peers.XXXXXX)
REDIS_PID=""
PG_STARTED=""

# Runs a command as the postgres user when we are root (initdb refuses root).
as_pg() {
	if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
	local rc=$?
	set +e
	if [[ -n $PG_STARTED ]]; then
		as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1
	fi
	if [[ -n $REDIS_PID ]]; then
		kill "$REDIS_PID" 2>/dev/null
		wait "$REDIS_PID" 2>/dev/null
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Redis.
mkdir -p "$WORK/redis"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
	--dir "$WORK/redis" --appendonly yes --appendfsync everysec --save "" \
	--daemonize no --logfile "$WORK/redis/redis.log" &
REDIS_PID=$!

# PostgreSQL.
if [[ $(id -u) -eq 0 ]]; then chown postgres: "$WORK"; fi
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U postgres --auth=trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 ||
	{ cat "$WORK/initdb.log" >&2; exit 1; }
PG_STARTED=1
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -t 60 \
	-o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$WORK" start >/dev/null ||
	{ cat "$WORK/pg.log" >&2; exit 1; }

# Wait for both.
for _ in $(seq 1 100); do
	redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
	kill -0 "$REDIS_PID" 2>/dev/null || { cat "$WORK/redis/redis.log" >&2; exit 1; }
	sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping | grep -q PONG
for _ in $(seq 1 100); do
	"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
	sleep 0.1
done
"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
log "redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$REDIS_PORT, postgres $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"

go run . \
	-redis "127.0.0.1:$REDIS_PORT" \
	-pg "postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable" \
	"$@"
