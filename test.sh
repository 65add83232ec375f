#!/usr/bin/env bash
# The test suite, as CI runs it (.ci/run calls exactly this):
#
#   ./test.sh                 # everything; as root for the full set
#   ./test.sh ./server/...    # the checks, then the tests of some packages
#
# 1. installs the Debian packages the tests run against, where missing
#    (scripts/deps.sh: it says which before it does);
# 2. checks formatting (gofmt), go vet and staticcheck;
# 3. runs the tests (go test; as root the tests that need network
#    namespaces and QEMU run too, otherwise they say why they skip);
# 4. fuzzes every fuzz target for FUZZTIME (default 5000x, that many
#    inputs: a few seconds each; a duration such as 30s works too; 0 skips
#    it), so the decoders a stranger reaches get new inputs on every run.
#    The default is a count, not a time: Go 1.26's fuzzing, stopped by a
#    time, can fail at its deadline with "context deadline exceeded" and
#    no failing input (golang/go#75804, fixed in Go 1.27).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"

scripts/deps.sh test
go mod download
# The dashboard's browser tests (web/browser_test.go) drive chromium with
# playwright-core: the lockfile's exact version, from the npm registry.
if command -v npm >/dev/null; then
	(cd web/browser && npm ci --no-audit --no-fund --loglevel=error >&2)
else
	echo "npm is missing: the dashboard's browser tests will say how to install playwright-core" >&2
fi

echo "== gofmt, go vet, staticcheck" >&2
unformatted=$(gofmt -l $(git ls-files -co --exclude-standard '*.go'))
if [ -n "$unformatted" ]; then
	echo "not gofmt-formatted (run gofmt -w):" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
# staticcheck at a pinned version: go run fetches it through the module
# proxy (once; it is not a dependency of the module). A finding fails the
# run; a deliberate exception carries a //lint:ignore with its reason.
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

echo "== go test" >&2
pkgs=("$@")
((${#pkgs[@]})) || pkgs=(./...)
# e2e boots real guests under TCG: a package may take longer than go
# test's default 10 minutes on a 2-core machine.
go test -timeout 40m "${pkgs[@]}"

fuzztime=${FUZZTIME:-5000x}
if [ "$fuzztime" != 0 ]; then
	echo "== fuzzing each target for $fuzztime" >&2
	# Every `func FuzzX(f *testing.F)` in the chosen packages.
	targets=()
	for dir in $(go list -f '{{.Dir}}' "${pkgs[@]}"); do
		for fn in $(grep -ho '^func Fuzz[A-Za-z0-9_]*(f \*testing\.F)' "$dir"/*_test.go 2>/dev/null |
			sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
			targets+=("$dir:$fn")
		done
	done
	for t in "${targets[@]}"; do
		dir=${t%:*} fn=${t##*:}
		echo "-- $fn (${dir#"$PWD"/})" >&2
		go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$dir"
	done
fi
