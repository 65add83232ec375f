#!/usr/bin/env bash
# The demo: a whole Hearth lab on this machine (needs root for network
# namespaces). It installs the Debian packages the demo runs that are
# missing (scripts/deps.sh demo says which, before), builds hearth,
# brings up a sandbox of two hosts (a server, and an agent in a network
# namespace per host), applies the example lab, waits for its VMs to boot
# and shows them. Nothing leaves the namespaces it creates.
#
# Safe to run again: installed packages are not installed twice, the
# binary is replaced whole, and a sandbox left by an earlier run (up, or
# half-built by one cut short) is taken down before a new one goes up.
# Ctrl-C while it builds takes down what it built. Once it is up, it stays
# up for you to use; `hearth sandbox down` removes it all. It waits up to
# HEARTH_DEMO_WAIT seconds (default 600) for the guests to boot; a guest
# that does not leaves the lab up, with the commands that show why, and
# the demo fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "the sandbox needs root (network namespaces): run sudo $0" >&2
	exit 1
fi
# sudo resets PATH; Go's own installer puts go in /usr/local/go/bin.
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
	echo "the demo builds hearth with Go 1.26, which is not installed: see https://go.dev/doc/install" >&2
	exit 1
fi

scripts/deps.sh demo

echo "building bin/hearth" >&2
mkdir -p bin
# Built beside the old binary and renamed over it, so an interrupted build
# never leaves half a binary behind.
go build -o bin/.hearth.new ./cmd/hearth
mv -f bin/.hearth.new bin/hearth
hearth=$PWD/bin/hearth
dir=${HEARTH_SANDBOX_DIR:-/var/lib/hearth-sandbox}
# To run beside another sandbox, give it its own directory, prefix and
# underlay, e.g. HEARTH_SANDBOX_DIR=/var/lib/hs2
# HEARTH_SANDBOX_ARGS="--prefix hs2 --underlay-cidr 172.31.250.0/24".
read -r -a up_args <<<"${HEARTH_SANDBOX_ARGS:-}"

if [ -e "$dir/sandbox.json" ]; then
	echo "taking down the sandbox an earlier run left in $dir" >&2
fi
"$hearth" sandbox down --dir "$dir" >/dev/null 2>&1 || true

# From here until the lab is up, an interruption or a failure takes down
# what was built, so nothing is left half-done.
up=false
cleanup() {
	status=$?
	if [ "$up" != true ]; then
		echo >&2
		echo "the demo stopped before the lab was up: taking the sandbox down" >&2
		# down removes the logs an error above may point at: keep
		# a copy, so the reason is still there to read.
		if [ -d "$dir" ] && logs=$(mktemp -d /tmp/hearth-demo-logs.XXXXXX); then
			(cd "$dir" && find . -name '*.log' -exec cp --parents {} "$logs" \;) 2>/dev/null || true
			echo "the sandbox's logs are kept in $logs (the paths above, under it)" >&2
		fi
		"$hearth" sandbox down --dir "$dir" >/dev/null 2>&1 || true
		echo "run $0 again to start over" >&2
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Progress goes to stderr as it happens; the summary (stdout) is shown
# once up is done. (Not tee /dev/stderr: with the output redirected to a
# file, that opens the file again from its start and writes over it.)
summary=$("$hearth" sandbox up --hosts 2 --dir "$dir" "${up_args[@]}")
echo "$summary"
config=$(tail -n1 <<<"$summary")
export HEARTH_CONFIG=${config#export HEARTH_CONFIG=}

run() {
	echo
	echo "\$ hearth $*"
	"$hearth" "$@"
}
run get hosts -o wide
run get images
run apply -f examples/lab.yaml
run apply -f examples/sandbox/lab.yaml
# Two tenants with the same CIDR, two subnets, NAT and a floating IP.
run apply -f examples/sandbox/networks.yaml

# The guests are emulated (TCG) where KVM is missing or unusable, and the
# machine may be busy: a boot can take minutes. Wait up to
# HEARTH_DEMO_WAIT seconds (default 600: 300 was seen to fall short on a
# machine loaded 10 times over), saying how far it got every 15 s.
wait=${HEARTH_DEMO_WAIT:-600}
echo
echo "waiting up to ${wait}s for the 3 VMs of tenant demo to run and web-1's guest to say it is ready…"
start=$SECONDS
running=0
ready=false
next=15
while :; do
	running=$("$hearth" get vm --tenant demo -o json 2>/dev/null | grep -c '"phase": "Running"' || true)
	if [ "$running" -ge 3 ] && "$hearth" logs vm/web-1 --tenant demo 2>/dev/null | grep -q "HEARTH-GUEST ready"; then
		ready=true
		break
	fi
	waited=$((SECONDS - start))
	[ "$waited" -ge "$wait" ] && break
	if [ "$waited" -ge "$next" ]; then
		if [ "$running" -ge 3 ]; then
			echo "  ${waited}s: 3 of 3 VMs running; web-1's guest is still booting" >&2
		else
			echo "  ${waited}s: $running of 3 VMs running" >&2
		fi
		next=$((next + 15))
	fi
	sleep 2
done
# The lab is up (a slow guest is no reason to take it down: it is what to
# look at).
up=true
trap - EXIT INT TERM
if [ "$ready" != true ]; then
	cat >&2 <<MSG

web-1's guest did not say "HEARTH-GUEST ready" within ${wait}s ($running of 3 VMs running).
The sandbox stays up so you can see why:
  export HEARTH_CONFIG=$HEARTH_CONFIG
  $hearth get vm -A -o wide                  # phases; a Failed VM says why
  $hearth describe vm web-1 --tenant demo    # its conditions and events
  $hearth logs vm/web-1 --tenant demo        # its serial console: how far the guest booted
  $hearth get hosts -o wide                  # are both hosts Ready?
A guest emulated on a busy machine may just be slow: wait, then run the
logs command again, or rerun with HEARTH_DEMO_WAIT=1800.
Remove everything with: $hearth sandbox down --dir $dir
MSG
	exit 1
fi

run get vm -A -o wide
# Applying again changes nothing: the hosts the scheduler chose stay.
run apply -f examples/sandbox/lab.yaml
echo
echo "\$ hearth logs vm/web-1 --tenant demo | grep HEARTH-GUEST"
"$hearth" logs vm/web-1 --tenant demo | grep HEARTH-GUEST || true
run describe vm web-1 --tenant demo

# The example profile names the kernel under the default sandbox
# directory: with another, the command rewrites it.
profile=$PWD/examples/sandbox/machines.yaml
apply_profile="$hearth apply -f $profile"
if [ "$(realpath -m "$dir")" != /var/lib/hearth-sandbox ]; then
	apply_profile="sed 's|/var/lib/hearth-sandbox/|$(realpath -m "$dir")/|' $profile | $hearth apply -f -"
fi

# The commands below name this sandbox's internet namespace and red/a's
# floating IP as they are, not as placeholders.
prefix=$(sed -n 's/^ *"prefix": "\(.*\)",*$/\1/p' "$dir/sandbox.json" | head -n1)
fip=$("$hearth" get fip a --tenant red -o json | sed -n 's/^ *"address": "\(.*\)",*$/\1/p' | head -n1)
fip=${fip:-ADDRESS}

cat <<MSG

The sandbox is up: a server and 2 hosts. Try:
  export HEARTH_CONFIG=$HEARTH_CONFIG
  $hearth console vm/web-1 --tenant demo     # Ctrl-] to leave
  $hearth get vm -A -w
Tenant networks: two tenants with the same CIDR, two subnets, NAT and a
floating IP, and red's IPv6 routed to the internet without NAT:
  $hearth logs vm/a --tenant red | grep NETTEST   # what red/a reached: its peer, the other subnet, the internet
  $hearth get fip --tenant red                   # red/a's floating IP, $fip
  $hearth sandbox exec-in ${prefix}-internet -- wget -qO- http://$fip/   # red/a from the internet
  $hearth sandbox exec-in ${prefix}-internet -- wget -qO- 'http://[fd00:10:1:0:5054:ff:fe10:10a]/'   # red/a by its own IPv6 address
A bare-metal machine that network-boots, and a MachineProfile that boots it
until it reports back (phase Ready):
  $hearth sandbox machine add node1 --dir $dir
  $apply_profile
  $hearth get machines -w
  $hearth describe machine node1   # its boot timeline
More examples of every kind: $PWD/examples/README.md
Remove everything with: $hearth sandbox down --dir $dir
export HEARTH_CONFIG=$HEARTH_CONFIG
MSG
