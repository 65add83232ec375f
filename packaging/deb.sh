#!/usr/bin/env bash
# Builds the Debian package of Hearth from this checkout:
#
#   packaging/deb.sh [OUT-DIR]      # default out/; prints the .deb's path
#
# The package (packaging/debian/) holds the hearth binary (static, built
# here with Go), systemd units for the server, the agent (KillMode=process,
# so VMs outlive it) and the boot service, their flags in /etc/hearth/*.env,
# and the data directories: /var/lib/hearth (the server's, owned by the
# system user hearth that postinst makes, mode 0700), /var/lib/hearth-agent
# and /var/lib/hearth-boot (root, 0700). It depends on what the agent and
# the boot service run (QEMU, its firmware and block drivers, iPXE,
# nftables, iproute2). Installing it starts and enables nothing.
#
# The version is HEARTH_VERSION, or 0~DATE.COMMIT of the checkout's last
# commit (its commit time, so later commits make newer packages), with
# +dirty when the tree has changes; the binary reports the same
# (hearth version). Needs Go and dpkg-deb; lintian checks the result
# (packaging/packaging_test.go does).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
out=${1:-out}
src=packaging/debian

version=${HEARTH_VERSION:-}
if [ -z "$version" ]; then
	version="0~$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S).$(git rev-parse --short=12 HEAD)"
	if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		version+="+dirty"
	fi
fi
arch=$(dpkg --print-architecture)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
	"$root/usr/share/doc/hearth" "$root/etc/hearth" "$root/var/lib"
install -d -m 0700 "$root/var/lib/hearth" "$root/var/lib/hearth-agent" "$root/var/lib/hearth-boot"

# A static binary that runs on any Debian of the architecture.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X hearth.dev/hearth/version.Version=$version" \
	-o "$root/usr/bin/hearth" ./cmd/hearth

install -m 0644 "$src"/hearth-server.service "$src"/hearth-agent.service "$src"/hearth-boot.service \
	"$root/lib/systemd/system/"
install -m 0644 "$src/server.env" "$src/agent.env" "$src/boot.env" "$root/etc/hearth/"
year=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y 2>/dev/null || date -u +%Y)
sed "s/@YEAR@/$year/" "$src/copyright" >"$root/usr/share/doc/hearth/copyright"
chmod 0644 "$root/usr/share/doc/hearth/copyright"
install -d -m 0755 "$root/usr/share/lintian/overrides"
install -m 0644 "$src/lintian-overrides" "$root/usr/share/lintian/overrides/hearth"
install -m 0644 docs/INSTALL.md "$root/usr/share/doc/hearth/INSTALL.md"
date=$(TZ=UTC git log -1 --format=%cd --date=format-local:'%a, %d %b %Y %H:%M:%S +0000' 2>/dev/null || date -uR)
cat >"$stage/changelog" <<EOF
hearth ($version) unstable; urgency=medium

  * Built from commit $(git rev-parse HEAD 2>/dev/null || echo unknown).

 -- Hearth developers <hearth@hearth.dev>  $date
EOF
gzip -9n <"$stage/changelog" >"$root/usr/share/doc/hearth/changelog.gz"
chmod 0644 "$root/usr/share/doc/hearth/changelog.gz"

install -m 0755 "$src/postinst" "$src/postrm" "$root/DEBIAN/"
install -m 0644 "$src/conffiles" "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" "$src/control" >"$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/hearth_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
