#!/bin/sh
# Runs every Go fuzz target of the module (func FuzzXxx in a _test.go file)
# for FUZZTIME each (default 30s): `go test -fuzz` takes one target of one
# package per run. A failing input is written to the package's
# testdata/fuzz/<target>/ and then runs as a seed in every `go test`; commit
# it with the fix. Exits non-zero if any target failed, after running all.
#
#   FUZZTIME=2m scripts/fuzz.sh        # or: make fuzz FUZZTIME=2m
#   FUZZFLAGS='-parallel 2' scripts/fuzz.sh
set -eu
FUZZTIME=${FUZZTIME:-30s}
GO=${GO:-go}
FUZZFLAGS=${FUZZFLAGS:-}
cd "$(dirname "$0")/.."

failed=""
for dir in $(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | xargs -n1 dirname | sort -u); do
	pkg="./$dir"
	for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
		echo "== $pkg $target ($FUZZTIME)"
		# shellcheck disable=SC2086 # FUZZFLAGS is a list of flags
		if ! $GO test -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" $FUZZFLAGS "$pkg"; then
			failed="$failed $pkg:$target"
		fi
	done
done
if [ -n "$failed" ]; then
	echo "fuzz: failed:$failed" >&2
	exit 1
fi
echo "fuzz: every target passed"
