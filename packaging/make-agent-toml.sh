#!/usr/bin/env bash
# Writes the config the Debian package installs as /etc/outlet-agent/agent.toml
# (packaging/agent.toml) from the documented example config/agent.toml.
#
# Why generated: config/agent.toml documents every key and is what developers
# run with; the installed file must carry the same keys and comments and
# differ only where an outlet differs from a developer's machine. Deriving it
# keeps the two from drifting; packaging/check.sh fails when the committed
# packaging/agent.toml is not what this script produces.
#
# Usage: packaging/make-agent-toml.sh [OUTPUT]   (default: packaging/agent.toml)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../config/agent.toml"
out="${1:-$here/agent.toml}"

# Each substitution must hit exactly one line: if config/agent.toml renames a
# key or changes a default, this script must be looked at again.
expect_one() {
    local pattern="$1" count
    count="$(grep -cE "$pattern" "$src" || true)"
    if [[ "$count" != 1 ]]; then
        echo "make-agent-toml: expected exactly one line matching '$pattern' in $src, found $count" >&2
        exit 1
    fi
}
expect_one '^data_dir = "data"$'
expect_one '^check = "build_date"$'

tmp="$(mktemp "${out}.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# The package's state directory (StateDirectory= in the unit) and a clock
# that is only trusted once the kernel reports NTP sync (a Pi has no RTC).
sed -E \
    -e 's|^data_dir = "data"$|data_dir = "/var/lib/outlet-agent"|' \
    -e 's|^check = "build_date"$|check = "ntp"|' \
    "$src" >"$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$out"
trap - EXIT
