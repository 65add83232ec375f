#!/usr/bin/env bash
# The demo: start a Hearth control plane on loopback, apply the example lab
# and look at it. It leaves the server running and prints how to use and
# stop it. Nothing leaves 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${HEARTH_DEMO_DIR:-$(mktemp -d -t hearth-demo-XXXX)}
go build -o bin/hearth ./cmd/hearth
hearth=$PWD/bin/hearth

"$hearth" server --data-dir "$dir" --listen 127.0.0.1:0 \
	--etcd-client-url "http://127.0.0.1:0" --etcd-peer-url "http://127.0.0.1:0" \
	>"$dir/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	[ -s "$dir/admin.conf" ] && break
	kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log"; exit 1; }
	sleep 0.1
done
export HEARTH_CONFIG=$dir/admin.conf

run() { echo; echo "\$ hearth $*"; "$hearth" "$@"; }
run whoami
run apply -f examples/lab.yaml
run apply -f examples/lab.yaml
run get tenants
run get networks,subnets -A -o wide
run describe subnet k8s-nodes --tenant lab
run token create --user alice --ttl 1h >/dev/null && echo "(a token for alice was issued)"

cat <<MSG

The control plane is running (pid $pid, data in $dir). Try:
  export HEARTH_CONFIG=$HEARTH_CONFIG
  $hearth get networks -A -w        # and apply or delete in another shell
  $hearth api-resources
Stop it with: kill $pid
export HEARTH_CONFIG=$HEARTH_CONFIG
MSG
