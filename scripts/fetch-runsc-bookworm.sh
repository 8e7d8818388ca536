#!/usr/bin/env bash
# Puts Debian 12's runsc (release 20221219) beside the installed one, for
# `sprout bench --compare-runsc`: the workload rows then measure it in the
# same run as the runsc Sprout uses. Prints the binary's path. The package
# is unpacked into a cache folder, never installed.
#   fetch-runsc-bookworm.sh [DIR]   (default /var/cache/sprout-bench)
set -euo pipefail
dir=${1:-/var/cache/sprout-bench}
target="$dir/runsc-20221219/runsc"
if [ -x "$target" ]; then echo "$target"; exit 0; fi
version=$(apt-cache madison runsc | awk '$3 ~ /^0\.0~20221219/ {print $3; exit}')
[ -n "$version" ] || { echo "fetch-runsc-bookworm: Debian 12's runsc (0.0~20221219) is not in apt's lists; apt-get update first" >&2; exit 1; }
work=$(mktemp -d)
chmod 755 "$work"  # apt-get download drops to _apt, which must be able to write here
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "runsc=$version" >/dev/null)
dpkg-deb -x "$work"/runsc_*.deb "$work/root"
mkdir -p "$(dirname "$target")"
install -m 0755 "$work/root/usr/bin/runsc" "$target.tmp"
mv "$target.tmp" "$target"
echo "$target"
