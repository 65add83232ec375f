#!/usr/bin/env bash
# Installs the Debian packages a role needs, only those missing, and says
# which before it does. Safe to run again: nothing installed is installed
# twice, and an interrupted apt-get leaves dpkg to finish on the next run.
#
#   scripts/deps.sh test   # the peers the tests run against
#   scripts/deps.sh demo   # what the sandbox demo runs
#
# Root installs directly; anyone else through sudo. Off Debian (no
# apt-get) it only lists what it would want.
set -euo pipefail

# What the sandbox demo runs: QEMU and qemu-img for VMs and volumes, the
# firmware VMs and network-booted machines start with (SeaBIOS with QEMU's
# iPXE ROMs, OVMF), the iPXE binaries the boot service serves, busybox for
# the test guest (built from Debian's kernel and busybox packages with
# apt-get download), iproute2 for the namespaces, dnsmasq as the home
# router of `sandbox up --home-router`; ca-certificates for Go's module
# downloads; git, which go build runs to stamp the binary with the
# checkout's commit (it refuses to build a git checkout without it).
demo=(qemu-system-x86 qemu-utils ipxe-qemu ovmf ipxe busybox-static iproute2 dnsmasq-base
	ca-certificates git)

# The tests need the demo's packages and real peers to test against: an
# external etcd (--etcd-endpoints); isoinfo to check cloud-init seeds;
# DHCP clients (udhcpc from busybox-static, dhclient, dhcping) and TFTP
# clients (tftp-hpa, atftp); a simulated BMC (openipmi's ipmi_sim) and
# ipmitool; isolinux and syslinux for boot media; iperf3, the plain path
# the data plane's benchmarks compare with; chromium and nodejs for the
# dashboard's browser tests (web/browser: playwright-core, which ./test.sh
# installs with npm from web/browser/package-lock.json, drives Debian's
# chromium over its DevTools protocol, so no chromedriver; npm is Debian's
# where no npm is installed, and none is asked for where one is: a
# NodeSource nodejs brings its own, which conflicts with Debian's npm
# package); prometheus, which the agent tests run against a server, an
# agent and a boot service; shared storage to test the rbd and nfs drivers
# against (storage/cephtest, storage/nfstest): a single-node Ceph
# (ceph-mon, ceph-mgr, ceph-osd; ceph-common for the rbd and ceph programs
# the driver runs) and NFS-Ganesha with its VFS backend and rpcbind
# (userspace, because kernels without nfsd exist, this test machine's
# among them); qemu-block-extra, QEMU's rbd and nfs block drivers (librbd,
# libnfs), which the drivers' volumes are opened with and hearth doctor
# looks for; lintian and mmdebstrap, which check the Debian package and
# build the throwaway Debian roots it and the README's commands are
# installed into (packaging/); mmdebstrap also builds the Debian image
# with Debian's cloud-init that TestSandboxCloudInit boots
# (testguest.BuildDebian), whose file system e2fsprogs' mke2fs fills from
# a directory, with no loop device or mount; dnsperf and wrk, the load
# generators of the tenant DNS and metadata benchmarks
# (BenchmarkNetServices, against dnsmasq from dnsmasq-base).
test=("${demo[@]}" etcd-server genisoimage isc-dhcp-client dhcping tftp-hpa atftp ipmitool
	openipmi isolinux syslinux-common syslinux-utils iperf3 dnsperf wrk
	ceph-mon ceph-mgr ceph-osd ceph-common qemu-block-extra nfs-ganesha nfs-ganesha-vfs rpcbind
	lintian mmdebstrap e2fsprogs chromium nodejs prometheus)

command -v npm >/dev/null || test+=(npm)

role=${1:-}
case "$role" in
test) want=("${test[@]}") ;;
demo) want=("${demo[@]}") ;;
*)
	echo "usage: $0 test|demo" >&2
	exit 2
	;;
esac

need=()
for pkg in "${want[@]}"; do
	dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || need+=("$pkg")
done
((${#need[@]})) || exit 0

if ! command -v apt-get >/dev/null; then
	echo "missing (install them with your package manager): ${need[*]}" >&2
	exit 0
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
	if ! command -v sudo >/dev/null; then
		echo "missing Debian packages: ${need[*]}" >&2
		echo "install them as root: apt-get install --no-install-recommends ${need[*]}" >&2
		exit 1
	fi
	sudo=(sudo)
fi
echo "installing the Debian packages the ${role} needs that are missing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive

# Another package manager may be at work: unattended-upgrades on a fresh
# machine, or the dpkg of a run that was killed, which goes on without
# it. Wait for it (10 minutes at most) rather than fail.
wait_lock=(-o DPkg::Lock::Timeout=600)
configure_pending() {
	local out said=false
	for _ in $(seq 120); do
		if out=$("${sudo[@]}" dpkg --configure -a 2>&1); then
			[ -z "$out" ] || echo "$out" >&2
			return 0
		fi
		if [[ "$out" != *lock* ]]; then
			echo "$out" >&2
			return 1
		fi
		if [ "$said" = false ]; then
			echo "waiting for another package manager to finish…" >&2
			said=true
		fi
		sleep 5
	done
	echo "$out" >&2
	return 1
}

# A run cut short (Ctrl-C, a closed terminal) may have left dpkg
# half-way: finish what it unpacked, and what apt had left to do, first.
configure_pending
"${sudo[@]}" apt-get "${wait_lock[@]}" update -q >&2
"${sudo[@]}" apt-get "${wait_lock[@]}" install -y -q --no-install-recommends -f >&2
"${sudo[@]}" apt-get "${wait_lock[@]}" install -y -q --no-install-recommends "${need[@]}" >&2

# Debian's etcd package starts a daemon on the default ports where systemd
# runs; the tests start their own etcd on their own ports. Leave the machine
# as quiet as it was: stop the daemon this run installed.
if [[ " ${need[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null &&
	systemctl is-active --quiet etcd 2>/dev/null; then
	"${sudo[@]}" systemctl disable --now etcd >/dev/null 2>&1 || true
fi
# Likewise NFS-Ganesha and rpcbind, which Debian starts on install: the
# tests run their own in a network namespace.
for pkg_units in "nfs-ganesha:nfs-ganesha" "rpcbind:rpcbind rpcbind.socket"; do
	pkg=${pkg_units%%:*} units=${pkg_units#*:}
	if [[ " ${need[*]} " == *" $pkg "* ]] && command -v systemctl >/dev/null &&
		systemctl is-active --quiet ${units%% *} 2>/dev/null; then
		"${sudo[@]}" systemctl disable --now $units >/dev/null 2>&1 || true
	fi
done
# Prometheus's package starts a daemon (and its node exporter) too; the
# tests run their own.
if [[ " ${need[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
	for unit in prometheus prometheus-node-exporter; do
		systemctl is-active --quiet "$unit" 2>/dev/null && "${sudo[@]}" systemctl disable --now "$unit" >/dev/null 2>&1 || true
	done
fi
