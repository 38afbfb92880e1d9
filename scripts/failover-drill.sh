#!/usr/bin/env bash
# Failover drill with real processes: `durable dev` (etcd + sink + node dev-1)
# and one `durable agent` (a2) in the same data center. Reminders due one
# second from now are set on 80 objects, a2 is killed with SIGKILL at once,
# and the sink's log shows when the alarms of a2's partitions fired on dev-1.
# Prints the time from the kill to the first and last of them.
#
#   scripts/failover-drill.sh [lease-ttl]      (default 3s)
set -euo pipefail
cd "$(dirname "$0")/.."
ttl=${1:-3s}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
CGO_ENABLED=0 go build -o "$work/durable" ./cmd/durable
d="$work/durable"
export DURABLE_LOG_LEVEL=warn
"$d" dev --listen 127.0.0.1:7500 --etcd-listen 127.0.0.1:7579 --sink-listen 127.0.0.1:7580 \
  --sink-file "$work/sink.jsonl" --lease-ttl "$ttl" >"$work/dev.log" 2>&1 &
until "$d" health --addr 127.0.0.1:7500 >/dev/null 2>&1; do sleep 0.1; done
"$d" agent --etcd http://127.0.0.1:7579 --node-id a2 --dc dc1 --listen 127.0.0.1:7501 \
  --upstream http://127.0.0.1:7580 --lease-ttl "$ttl" >"$work/a2.log" 2>&1 &
a2=$!
# Wait until the leader has given a2 its share.
until "$d" status --addr 127.0.0.1:7500 | grep -Eq '^a2 +dc1 .* up +12[0-9] '; do sleep 0.2; done
owned=$("$d" status --addr 127.0.0.1:7500 | awk '$1=="a2"{print $5}')
pids=()
for i in $(seq 1 80); do
  "$d" invoke --addr 127.0.0.1:7500 Reminder "drill-$i" set "{\"message\":\"m$i\",\"in\":\"1s\"}" >/dev/null &
  pids+=($!)
done
wait "${pids[@]}"
kill -9 "$a2"
killed=$(date +%s.%N)
sleep "$(( ${ttl%s} + 4 ))"
python3 - "$work/sink.jsonl" "$killed" "$owned" <<'PY'
import json, sys, datetime
path, killed, owned = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def ts(s): return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
rows = [json.loads(l) for l in open(path)]
fired = []
for r in rows:
    body = r.get("body", r)
    if isinstance(body, str):
        body = json.loads(body)
    fired.append((ts(body["fired"]) - ts(body["scheduled"]), ts(body["fired"]) - killed))
late = sorted(k for lateness, k in fired if lateness > 1.0)
print(f"deliveries: {len(fired)} of 80; a2 owned {owned} partitions")
print(f"overdue alarms of the killed node fired elsewhere: {len(late)}")
if late:
    print(f"kill -> first: {late[0]:.2f}s, kill -> last: {late[-1]:.2f}s")
PY
