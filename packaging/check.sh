#!/usr/bin/env bash
# packaging/check.sh - builds outlet-agent's release binary and Debian package
# for this machine and checks what an outlet would get:
#
#   * the .deb's files, modes, owners, conffiles and maintainer scripts;
#   * the unit: `systemd-analyze verify` and `systemd-analyze security` (<= 3.0);
#   * the sysusers/tmpfiles files, applied to the unpacked tree;
#   * the binary: certificate check enforced, no glibc symbol newer than 2.36
#     (Raspberry Pi OS bookworm), no aws-lc/jemalloc/openssl in the build;
#   * the notify protocol (READY/STATUS/WATCHDOG/STOPPING, exit 0 on SIGTERM)
#     with a fake NOTIFY_SOCKET, as the service's non-root user would run;
#   * every system call of such a run is allowed by the unit's filter.
#
# Runs on a fresh Debian bookworm machine as root (installs what is missing
# with apt-get and cargo-deb with cargo). Idempotent: builds into
# $CARGO_TARGET_DIR (default: target-pkg/, never the default target/), works
# in a temporary directory it removes. Exits non-zero on any failure and ends
# with "N passed, N failed".
#
# The Raspberry Pi builds have a script of their own, packaging/check-pi.sh
# (Debian's Rust and qemu); this one checks the package on this machine's
# own architecture, where the unit and the service's behaviour can run.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target-pkg}"

# shellcheck source=packaging/lib.sh
source packaging/lib.sh
SECURITY_MAX=3.0

work="$(mktemp -d -t outlet-pkg-check.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# --- Tools -------------------------------------------------------------------
log "tools"
need_apt=()
command -v dpkg-shlibdeps >/dev/null 2>&1 || need_apt+=(dpkg-dev)      # cargo-deb's $auto depends
command -v readelf >/dev/null 2>&1 || need_apt+=(binutils)             # glibc symbol versions
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)      # verify, security, sysusers, tmpfiles
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)              # the notify and syscall tests
command -v strace >/dev/null 2>&1 || need_apt+=(strace)                # system calls of a real run
command -v setpriv >/dev/null 2>&1 || need_apt+=(util-linux)           # run as a non-root user
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)                       # SQLite and ring are C
if ((${#need_apt[@]})); then
    [[ $EUID -eq 0 ]] || abort "tools: missing ${need_apt[*]}; run as root or install them"
    echo "installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null; } ||
        abort "tools: apt-get install ${need_apt[*]}"
fi

# `systemd-analyze security --offline` appeared in systemd 250.
systemd_version="$(systemd-analyze --version | awk 'NR == 1 { print $2 }')"
((systemd_version >= 250)) || abort "tools: systemd-analyze $systemd_version lacks --offline (need 250+)"

need_cargo_deb
echo "$(cargo deb --version), systemd $systemd_version, $(cargo --version)"

# --- The installed config ----------------------------------------------------
log "packaging/agent.toml"
config_current() {
    packaging/make-agent-toml.sh "$work/agent.toml" &&
        diff -u packaging/agent.toml "$work/agent.toml"
}
check "packaging/agent.toml is config/agent.toml with the package's values (else run packaging/make-agent-toml.sh)" config_current

# --- Build -------------------------------------------------------------------
log "release build (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
# Exactly what `cargo deb` would build (package.metadata.deb): the workspace
# release profile, without the default `hq` feature (HQ's tools are not for
# an outlet) and never `demo`.
t0="$(now)"
cargo build --release -p outlet-agent --bin outlet-agent --no-default-features ||
    abort "cargo build --release -p outlet-agent --no-default-features"
build_s="$(elapsed "$t0" "$(now)")"
bin="$CARGO_TARGET_DIR/release/outlet-agent"

log "cargo deb"
# --no-build: the binary above is the one packaged (the same flow as after a
# cross build). --no-strip: the release profile already strips.
mkdir -p "$CARGO_TARGET_DIR/debian"
t0="$(now)"
deb="$(cargo deb -p outlet-agent --no-build --no-strip --output "$CARGO_TARGET_DIR/debian/" | tail -n 1)" ||
    abort "cargo deb"
deb_s="$(elapsed "$t0" "$(now)")"
echo "$deb"
[[ -f "$deb" ]] || abort "cargo deb did not report a .deb ($deb)"

# --- Package contents --------------------------------------------------------
log "package contents"
root="$work/root"
control="$work/control"
mkdir -p "$root" "$control"
dpkg-deb -x "$deb" "$root" && dpkg-deb -e "$deb" "$control" || abort "dpkg-deb cannot unpack $deb"
dpkg-deb -I "$deb"
# "mode owner/group path" for every member, from the archives themselves
# (dpkg-deb -x as root would also keep owners, but the listing is the truth).
dpkg-deb --fsys-tarfile "$deb" | tar -tvf - | awk '{ print $1, $2, $6 }' >"$work/data.list"
dpkg-deb --ctrl-tarfile "$deb" | tar -tvf - | awk '{ print $1, $2, $6 }' >"$work/control.list"

member() { # member LIST PATH MODE: PATH is in LIST with MODE, owned by root
    grep -qxF -e "$3 0/0 $2" "$1" || {
        echo "  $2: want $3 0/0, have: $(grep -F " $2" "$1" || echo missing)"
        return 1
    }
}
expected_files=(
    "-rwxr-xr-x ./usr/bin/outlet-agent"
    "-rw-r--r-- ./usr/lib/systemd/system/outlet-agent.service"
    "-rw-r--r-- ./usr/lib/sysusers.d/outlet-agent.conf"
    "-rw-r--r-- ./usr/lib/tmpfiles.d/outlet-agent.conf"
    "-rw-r--r-- ./usr/lib/modules-load.d/outlet-agent.conf"
    "-rw-r--r-- ./etc/outlet-agent/agent.toml"
    "-rw-r--r-- ./usr/share/doc/outlet-agent/deploy.md"
    "-rw-r--r-- ./usr/share/doc/outlet-agent/copyright"
)
for entry in "${expected_files[@]}"; do
    check "file ${entry#* } ${entry%% *} root:root" member "$work/data.list" "${entry#* }" "${entry%% *}"
done
no_other_files() {
    local extra
    extra="$(grep -v '^d' "$work/data.list" | awk '{ print $3 }' | sort |
        comm -23 - <(printf '%s\n' "${expected_files[@]}" | awk '{ print $2 }' | sort))"
    [[ -z "$extra" ]] || { echo "  unexpected: $extra"; return 1; }
}
check "no other files in the package" no_other_files
dirs_ok() {
    local wrong
    wrong="$(awk '/^d/ && !($1 == "drwxr-xr-x" && $2 == "0/0")' "$work/data.list")"
    [[ -z "$wrong" ]] || { echo "  $wrong"; return 1; }
}
check "directories drwxr-xr-x root:root" dirs_ok

same() { cmp -s "$1" "$2" || { echo "  $2 differs from $1"; return 1; }; }
check "unit is systemd/outlet-agent.service" same systemd/outlet-agent.service "$root/usr/lib/systemd/system/outlet-agent.service"
check "sysusers.d file is systemd/outlet-agent.sysusers" same systemd/outlet-agent.sysusers "$root/usr/lib/sysusers.d/outlet-agent.conf"
check "tmpfiles.d file is systemd/outlet-agent.tmpfile" same systemd/outlet-agent.tmpfile "$root/usr/lib/tmpfiles.d/outlet-agent.conf"
check "modules-load.d file is systemd/outlet-agent.modules-load.conf" same systemd/outlet-agent.modules-load.conf "$root/usr/lib/modules-load.d/outlet-agent.conf"
check "/etc/outlet-agent/agent.toml is packaging/agent.toml" same packaging/agent.toml "$root/etc/outlet-agent/agent.toml"
check "packaged binary is the release build" same "$bin" "$root/usr/bin/outlet-agent"

# --- Control data ------------------------------------------------------------
log "control data"
field() { dpkg-deb -f "$deb" "$1"; }
version="$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "outlet-agent"))')"
field_is() { [[ "$(field "$1")" == "$2" ]] || { echo "  $1: $(field "$1") (want $2)"; return 1; }; }
check "Package: outlet-agent" field_is Package outlet-agent
check "Version: $version-1" field_is Version "$version-1"
check "Architecture: $(dpkg --print-architecture)" field_is Architecture "$(dpkg --print-architecture)"
depends_has() { field Depends | tr ',' '\n' | grep -qE "^ *$1( |$)" || { echo "  Depends: $(field Depends)"; return 1; }; }
for dep in libc6 systemd init-system-helpers ca-certificates; do
    check "Depends: $dep" depends_has "$dep"
done
conffiles_ok() { [[ "$(cat "$control/conffiles")" == "/etc/outlet-agent/agent.toml" ]]; }
check "conffiles: /etc/outlet-agent/agent.toml" conffiles_ok
for script in postinst prerm postrm; do
    check "control $script -rwxr-xr-x root:root" member "$work/control.list" "./$script" -rwxr-xr-x
    check "$script is valid sh, no #DEBHELPER# left" bash -c \
        'sh -n "$1" && ! grep -q "#DEBHELPER#" "$1"' _ "$control/$script"
done
# The user must exist before the service is enabled and started.
postinst_order() {
    local s="$control/postinst" users tmp enable start
    users="$(grep -n 'systemd-sysusers .*outlet-agent.conf' "$s" | head -n1 | cut -d: -f1)"
    tmp="$(grep -n 'systemd-tmpfiles --create outlet-agent.conf' "$s" | head -n1 | cut -d: -f1)"
    enable="$(grep -n 'deb-systemd-helper enable outlet-agent.service' "$s" | head -n1 | cut -d: -f1)"
    start="$(grep -n 'deb-systemd-invoke .*outlet-agent.service' "$s" | head -n1 | cut -d: -f1)"
    [[ -n "$users" && -n "$tmp" && -n "$enable" && -n "$start" ]] &&
        ((users < tmp && tmp < enable && enable < start)) ||
        { echo "  sysusers@${users:-none} tmpfiles@${tmp:-none} enable@${enable:-none} start@${start:-none}"; return 1; }
}
check "postinst: sysusers, tmpfiles, enable, start (in that order)" postinst_order
check "prerm stops the service on removal" grep -q 'deb-systemd-invoke stop outlet-agent.service' "$control/prerm"
check "postrm purge removes /var/lib/outlet-agent" grep -q 'rm -rf /var/lib/outlet-agent' "$control/postrm"

# --- sysusers.d and tmpfiles.d, applied to a copy of the unpacked tree -------
log "sysusers.d / tmpfiles.d"
sysroot="$work/sysroot"
cp -a "$root" "$sysroot"
mkdir -p "$sysroot/etc"
systemd-sysusers --root="$sysroot" >/dev/null 2>&1 || true
user_ok() {
    local entry
    entry="$(grep '^outlet-agent:' "$sysroot/etc/passwd")" || { echo "  no outlet-agent in passwd"; return 1; }
    [[ "$(cut -d: -f6,7 <<<"$entry")" == "/var/lib/outlet-agent:/usr/sbin/nologin" ]] ||
        { echo "  $entry"; return 1; }
}
check "sysusers: system user outlet-agent, home /var/lib/outlet-agent, no shell" user_ok
member_of() { grep -qE "^$1:[^:]*:[0-9]+:(.*,)?outlet-agent(,|$)" "$sysroot/etc/group" || { echo "  $(grep "^$1:" "$sysroot/etc/group")"; return 1; }; }
check "sysusers: outlet-agent in group spi" member_of spi
check "sysusers: outlet-agent in group gpio" member_of gpio
systemd-tmpfiles --root="$sysroot" --create outlet-agent.conf >/dev/null 2>&1 || true
state_dir_ok() {
    local uid want
    uid="$(grep '^outlet-agent:' "$sysroot/etc/passwd" | cut -d: -f3)"
    want="700 $uid"
    [[ "$(stat -c '%a %u' "$sysroot/var/lib/outlet-agent" 2>/dev/null)" == "$want" ]] ||
        { echo "  $(stat -c '%a %u' "$sysroot/var/lib/outlet-agent" 2>&1) (want $want)"; return 1; }
}
check "tmpfiles: /var/lib/outlet-agent 0700 outlet-agent" state_dir_ok

# --- The unit ----------------------------------------------------------------
log "systemd-analyze"
# verify needs ExecStart's binary and the units it is ordered against; give it
# the unpacked package plus this machine's unit directory as its root, so the
# packaged unit is checked unmodified.
vroot="$work/vroot"
cp -a "$root" "$vroot"
cp -an /lib/systemd/system/. "$vroot/usr/lib/systemd/system/"
verify_ok() {
    local out
    out="$(systemd-analyze verify --root="$vroot" outlet-agent.service 2>&1)" || { echo "$out"; return 1; }
    [[ -z "$out" ]] || { echo "$out"; return 1; }
}
check "systemd-analyze verify: no errors, no warnings" verify_ok
security_line="$(systemd-analyze security --offline=true --no-pager \
    "$root/usr/lib/systemd/system/outlet-agent.service" 2>/dev/null | grep 'Overall exposure level' || true)"
exposure="$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+$/) { print $i; exit } }' <<<"$security_line")"
echo "${security_line:-no exposure line}"
security_ok() { [[ -n "$exposure" ]] && awk -v e="$exposure" -v m="$SECURITY_MAX" 'BEGIN { exit !(e <= m) }'; }
check "systemd-analyze security: exposure ${exposure:-?} <= $SECURITY_MAX" security_ok

# --- The binary --------------------------------------------------------------
log "binary"
pbin="$root/usr/bin/outlet-agent"
"$pbin" version || true
check "version: certificate-chain verification enforced" bash -c \
    '"$1" version | grep -qx "certificate-chain verification: enforced"' _ "$pbin"
check "version: no HQ tools in the outlet's binary" bash -c \
    '"$1" version | grep -q "^HQ tools .*: not built"' _ "$pbin"
glibc_max="$(glibc_max_of "$pbin")"
check "readelf: newest glibc symbol ${glibc_max:-?} <= $GLIBC_MAX" glibc_at_most "$glibc_max"
not_in_build() { # not_in_build CRATE [CARGO TREE ARGS...]
    local out crate="$1"
    shift
    # Absent: cargo does not know the crate at all ("did not match any
    # packages"), or knows it from the lock file but not in this build
    # ("nothing to print", exit 0: hyper, which only the `hq` feature pulls).
    out="$(cargo tree -p outlet-agent "$@" -e normal,build --target all -i "$crate" 2>&1)" || {
        grep -q 'did not match any packages' <<<"$out" && return 0
        echo "$out" | tail -n 3
        return 1
    }
    grep -q 'nothing to print' <<<"$out" && return 0
    echo "$out" | head -n 5
    return 1
}
for crate in aws-lc-sys tikv-jemalloc-sys jemalloc-sys openssl-sys; do
    check "no $crate in the build (any target)" not_in_build "$crate"
done
# The dashboard's HTTP server is HQ's (the `hq` feature), not an outlet's.
check "no hyper in the outlet's build (--no-default-features)" not_in_build hyper --no-default-features
shipped_config_ok() {
    local out
    out="$("$pbin" check-config --config "$root/etc/outlet-agent/agent.toml")" || { echo "$out"; return 1; }
    grep -qx 'data_dir = "/var/lib/outlet-agent"' <<<"$out" && grep -qx 'check = "ntp"' <<<"$out" ||
        { echo "$out"; return 1; }
}
check "check-config accepts the shipped config (data_dir /var/lib/outlet-agent, clock ntp)" shipped_config_ok

# --- Notify protocol and system calls ----------------------------------------
log "notify protocol (fake NOTIFY_SOCKET, WATCHDOG_USEC=2000000)"
# As root, run like the service: an unprivileged uid, no supplementary groups.
as_user=()
[[ $EUID -eq 0 ]] && as_user=(--user 65534)
counted() { # counted PYTHON_SCRIPT ARGS...: one check per PASS/FAIL line
    local out status=0 line
    out="$(python3 "$@" 2>&1)" || status=$?
    while IFS= read -r line; do
        case "$line" in
        "PASS "*) ok "${line#PASS }" ;;
        "FAIL "*) bad "${line#FAIL }" ;;
        *) printf '%s\n' "$line" ;;
        esac
    done <<<"$out"
    if ((status != 0)) && ! grep -q '^FAIL ' <<<"$out"; then bad "$1 exited $status"; fi
}
counted packaging/notify_test.py "$pbin" "${as_user[@]}"

log "system calls of a run vs. the unit's SystemCallFilter="
# The agent runs as another user and strace writes as that user.
chmod 0711 "$work"
mkdir -m 0777 "$work/strace"
# Two runs: one cycling connect/reconnect, one reading the NTP state
# (clock.check = "ntp", adjtimex). Protocol lines of these runs are not
# counted again; only the syscall check is.
for clock in off ntp; do
    python3 packaging/notify_test.py "$pbin" --clock "$clock" "${as_user[@]}" \
        --wrap strace -f -qq -o "$work/strace/$clock.log" >"$work/strace/$clock.out" 2>&1 ||
        { cat "$work/strace/$clock.out"; bad "agent under strace (clock $clock)"; }
done
cat "$work"/strace/*.log >"$work/strace/all.log"
counted packaging/syscall_check.py "$root/usr/lib/systemd/system/outlet-agent.service" "$work/strace/all.log"

# --- Summary -----------------------------------------------------------------
log "summary"
echo "package:       $deb ($(du -h "$deb" | cut -f1))"
echo "binary:        $(du -h "$bin" | cut -f1), newest glibc symbol ${glibc_max:-?}"
echo "exposure:      ${exposure:-?} (systemd-analyze security)"
echo "release build: ${build_s} s   cargo deb: ${deb_s} s"
echo "$passed passed, $failed failed"
((failed == 0))
