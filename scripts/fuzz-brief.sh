#!/usr/bin/env bash
# Runs every Go fuzz target in the repository for a short time each, one target at a time, and
# stops at the first failure, naming the target. A failing input is written by go test to
# <package>/testdata/fuzz/<Target>/; keep it: the regular `go test` run replays it.
#
#   FUZZTIME   time per target (default 3s; any -fuzztime value, e.g. 60s or 10000x)
#   FUZZ_PKGS  packages to search (default ./...)
#   FUZZ_RUN   only run targets whose name matches this extended regexp (default: all)
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-3s}"
FUZZ_PKGS="${FUZZ_PKGS:-./...}"
FUZZ_RUN="${FUZZ_RUN:-.}"

# Package directory and target name of every fuzz target, from the test sources of the packages
# go list reports (so vendored or ignored directories are skipped).
targets=()
while IFS= read -r dir; do
	for f in "$dir"/*_test.go; do
		[ -e "$f" ] || continue
		while IFS= read -r name; do
			targets+=("$dir $name")
		done < <(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(f \*testing\.F).*/\1/p' "$f")
	done
done < <(go list -f '{{.Dir}}' $FUZZ_PKGS)

if [ "${#targets[@]}" -eq 0 ]; then
	echo "fuzz-brief: no fuzz targets found" >&2
	exit 1
fi

root="$(pwd)"
ran=0
for t in "${targets[@]}"; do
	dir="${t%% *}"
	name="${t#* }"
	[[ "$name" =~ $FUZZ_RUN ]] || continue
	pkg="./${dir#"$root"/}"
	echo "=== $name ($pkg, $FUZZTIME)"
	log="$(mktemp)"
	status=0
	# -timeout well above -fuzztime: a hit test timeout would look like a finding.
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -timeout 30m "$pkg" >"$log" 2>&1 || status=$?
	tail -n 3 "$log" | grep -v '^ok' || true
	if [ "$status" -ne 0 ]; then
		# Go 1.26's fuzz coordinator can report "context deadline exceeded" when -fuzztime
		# ends while a worker is mid-call (go.dev/issue/75804). Without a written input that is
		# not a finding: run the target once more.
		if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
			echo "fuzz-brief: $name: fuzzing coordinator deadline race, retrying once"
			status=0
			go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -timeout 30m "$pkg" >"$log" 2>&1 || status=$?
			if [ "$status" -ne 0 ] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
				status=0
			fi
		fi
	fi
	if [ "$status" -ne 0 ]; then
		cat "$log"
		rm -f "$log"
		echo "fuzz-brief: FAIL: $name in $pkg" >&2
		echo "fuzz-brief: keep the input go test wrote under $pkg/testdata/fuzz/$name/ as a regression case" >&2
		exit 1
	fi
	rm -f "$log"
	ran=$((ran + 1))
done
echo "fuzz-brief: $ran fuzz targets passed ($FUZZTIME each)"
