# packaging/lib.sh - what packaging/check.sh and packaging/check-pi.sh share:
# counted checks, timing, cargo-deb and the glibc symbol check. Sourced, not
# run; the caller sets `set -euo pipefail` and defines nothing of these names.

# The version the timings in packaging/README.md were measured with; any
# 3.x understands the sysusers/tmpfile handling the metadata relies on.
CARGO_DEB_VERSION=3.8.0
# Raspberry Pi OS bookworm's glibc: no binary may need a newer symbol.
GLIBC_MAX=2.36

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok     %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL   %s\n' "$*"; }
# check NAME COMMAND...: one counted check. The command runs inside `if`, so
# `set -e` does not apply there: each check function returns its status.
check() {
    local name="$1"
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}
log() { printf '\n=== %s\n' "$*"; }
# A step everything after depends on failed: count it, close, stop.
abort() {
    bad "$*"
    echo "$passed passed, $failed failed"
    exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Installs cargo-deb 3.x with the toolchain on PATH when it is missing.
need_cargo_deb() {
    local major t0
    major="$(cargo deb --version 2>/dev/null | awk '{ split($2, v, "."); print v[1] }' || true)"
    if [[ -z "$major" || "$major" -lt 3 ]]; then
        # About 4 minutes on 2 cores (see packaging/README.md).
        t0="$(now)"
        cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked || abort "tools: cargo install cargo-deb"
        echo "cargo-deb installed in $(elapsed "$t0" "$(now)") s"
    fi
}

# The newest GLIBC_x.y symbol version BINARY needs (any architecture:
# readelf reads every ELF machine, objdump only its own).
glibc_max_of() {
    readelf -W --dyn-syms "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1
}
# glibc_at_most VERSION: VERSION is set and not newer than GLIBC_MAX.
glibc_at_most() {
    [[ -n "$1" && "$(printf '%s\n%s\n' "$1" "$GLIBC_MAX" | sort -V | tail -n 1)" == "$GLIBC_MAX" ]]
}
