#!/usr/bin/env bash
# packaging/check-pi.sh - builds and tests outlet-agent for the Raspberry Pi
# on this x86_64 Debian bookworm machine, with no Docker: Debian's own Rust
# (rustc-web, with the ARM standard libraries through multiarch), Debian's
# cross compilers and qemu user emulation. For each target it
#
#   * builds the release binary (same Cargo.lock, same release profile,
#     default features) and the Debian package;
#   * checks the binary's ELF machine and float ABI, its size, and that no
#     glibc symbol is newer than 2.36 (Raspberry Pi OS bookworm);
#   * runs `version` and `check-config` under qemu, and checks the package's
#     Architecture;
#   * runs the store's and the display's test suites under qemu (armv7 is
#     32-bit: pointer width, 64-bit atomics, time arithmetic, alignment);
#   * runs the end-to-end pairing tests of the host's harness (this
#     machine's fake WhatsApp server) against a test build of the ARM agent
#     under qemu: the QR links it, and restarts reconnect without a QR.
#
# Usage: packaging/check-pi.sh [TARGET...]
#   TARGET: aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf
#   (default: both). arm-unknown-linux-gnueabihf (ARMv6, Pi Zero/1) has no
#   Debian standard library; it stays on `cross` (docs/deploy.md).
#
# Runs as root on a fresh machine (installs what is missing with apt-get).
# Builds into $CARGO_TARGET_DIR (default: target-pi/, shared by both targets
# so the build scripts and proc macros are compiled once); the host harness
# builds into the default target/. Ends with "N passed, N failed" and the
# time of each step (docs/deploy.md, "Build without Docker", has the
# figures).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=packaging/lib.sh
source packaging/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target-pi}"

# The Debian Rust the builds use. bookworm-security carries it; bookworm
# itself has 1.85, too old for this workspace's dependencies.
DEBIAN_RUSTC=/usr/bin/rustc
DEBIAN_CARGO=/usr/bin/cargo
RUST_MIN=1.96
# A Pi binary larger than this has grown by accident (10-11 MB when this was
# written): the SD card image and the fleet's downloads pay for it.
SIZE_MAX_MB=16

# What this script builds, and what only `cross` can (no Debian std).
BUILT_HERE=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
CROSS_ONLY=(arm-unknown-linux-gnueabihf)

targets=("$@")
((${#targets[@]})) || targets=("${BUILT_HERE[@]}")

# Per target: Debian architecture, GNU triple, qemu, ELF machine (readelf).
declare -A deb_arch gnu qemu machine
for t in "${targets[@]}"; do
    case "$t" in
    aarch64-unknown-linux-gnu)
        deb_arch[$t]=arm64 gnu[$t]=aarch64-linux-gnu qemu[$t]=qemu-aarch64-static machine[$t]=AArch64
        ;;
    armv7-unknown-linux-gnueabihf)
        deb_arch[$t]=armhf gnu[$t]=arm-linux-gnueabihf qemu[$t]=qemu-arm-static machine[$t]=ARM
        ;;
    arm-unknown-linux-gnueabihf)
        echo "arm-unknown-linux-gnueabihf (ARMv6): Debian has no standard library for it; build it with cross (docs/deploy.md)" >&2
        exit 2
        ;;
    *)
        echo "unknown target $t (want aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf)" >&2
        exit 2
        ;;
    esac
done

work="$(mktemp -d -t outlet-pi-check.XXXXXX)"
trap 'rm -rf "$work"' EXIT
declare -A seconds
timed() { # timed NAME COMMAND...: runs COMMAND, records its wall time under NAME
    local name="$1" t0 status=0
    shift
    t0="$(now)"
    "$@" || status=$?
    seconds[$name]="$(elapsed "$t0" "$(now)")"
    return "$status"
}

# --- Cross.toml --------------------------------------------------------------
log "Cross.toml"
# Developers with Docker build with cross; both paths must know the same Pis.
in_step() {
    local cross ours
    cross="$(grep -oE '^\[target\.[a-z0-9_-]+\]' Cross.toml | sed -E 's/^\[target\.(.*)\]$/\1/' | sort)"
    ours="$(printf '%s\n' "${BUILT_HERE[@]}" "${CROSS_ONLY[@]}" | sort)"
    [[ "$cross" == "$ours" ]] || { diff <(echo "$cross") <(echo "$ours") | sed 's/^/  /'; return 1; }
}
check "Cross.toml's targets are this script's plus the cross-only ARMv6" in_step

# --- Tools -------------------------------------------------------------------
log "tools"
installed() { [[ "$(dpkg-query -W -f '${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "$@" >"$work/apt.log" 2>&1 ||
        { tail -n 20 "$work/apt.log"; return 1; }
}
# An index that failed to download on one architecture ("File has unexpected
# size ... Mirror sync in progress?") leaves apt offering that
# architecture's older std; the .gz indexes avoided it here, and the version
# check below catches it either way.
apt_update() {
    apt-get update -qq -o Acquire::CompressionTypes::Order::=gz >"$work/apt-update.log" 2>&1 ||
        { tail -n 20 "$work/apt-update.log"; return 1; }
}
tools() {
    local need=() arches t
    # python3: reads cargo's build messages and metadata (the test lists).
    for p in rustc-web cargo-web qemu-user-static binutils dpkg-dev python3; do installed "$p" || need+=("$p"); done
    for t in "${targets[@]}"; do
        for p in "gcc-${gnu[$t]}" "libc6-dev-${deb_arch[$t]}-cross" "libc6:${deb_arch[$t]}"; do
            installed "$p" || need+=("$p")
        done
    done
    arches="$(dpkg --print-foreign-architectures)"
    for t in "${targets[@]}"; do
        grep -qx "${deb_arch[$t]}" <<<"$arches" || { dpkg --add-architecture "${deb_arch[$t]}" && need+=(update); }
    done
    if ((${#need[@]})); then
        [[ $EUID -eq 0 ]] || { echo "  missing ${need[*]}; run as root or install them"; return 1; }
        echo "installing ${need[*]}"
        apt_update || return 1
        local pkgs=()
        for p in "${need[@]}"; do [[ "$p" == update ]] || pkgs+=("$p"); done
        ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}" || return 1
    fi
    # The ARM standard library must be exactly the compiler's version; ask for
    # that version by name, so apt says so plainly if an index lacks it.
    local rustc_deb std
    rustc_deb="$(dpkg-query -W -f '${Version}' rustc-web)"
    for t in "${targets[@]}"; do
        std="libstd-rust-web-dev:${deb_arch[$t]}"
        if [[ "$(dpkg-query -W -f '${Version}' "$std" 2>/dev/null)" != "$rustc_deb" ]]; then
            echo "installing $std=$rustc_deb"
            apt_install "$std=$rustc_deb" || {
                echo "  $std $rustc_deb (the version of rustc-web) cannot be installed: apt offers"
                apt-cache policy "$std" | sed 's/^/    /'
                echo "  The ${deb_arch[$t]} package index is older than the amd64 one (an interrupted"
                echo "  'apt-get update'?). Run: apt-get update -o Acquire::CompressionTypes::Order::=gz"
                return 1
            }
        fi
    done
}
timed tools tools || abort "tools"
rustc_version="$("$DEBIAN_RUSTC" --version | awk '{ print $2 }')"
rust_ok() { [[ "$(printf '%s\n%s\n' "$RUST_MIN" "$rustc_version" | sort -V | head -n 1)" == "$RUST_MIN" ]]; }
rust_ok || abort "tools: $DEBIAN_RUSTC is $rustc_version, need $RUST_MIN+ (rustc-web from bookworm-security)"
for t in "${targets[@]}"; do
    std_version="$(dpkg-query -W -f '${Version}' "libstd-rust-web-dev:${deb_arch[$t]}")"
    [[ "$std_version" == "$(dpkg-query -W -f '${Version}' rustc-web)" ]] ||
        abort "tools: libstd-rust-web-dev:${deb_arch[$t]} is $std_version, rustc-web $(dpkg-query -W -f '${Version}' rustc-web)"
done
need_cargo_deb
echo "$("$DEBIAN_RUSTC" --version), $("$DEBIAN_CARGO" --version), $(qemu-aarch64-static --version | head -n 1)"

# Debian's compiler and cargo for every ARM build; the cross gcc links and
# compiles the C (SQLite, ring). The ARM binaries run under qemu without -L:
# the loader and libc both come from multiarch libc6:<arch>. Tests that run
# a program of their own (the store's second process, the harness's agent)
# run it under OUTLET_TEST_RUNNER: no binfmt_misc here. The cross
# package's loader under -L with the multiarch libc hangs in
# pthread_create (aarch64) or crashes (armv7).
pi_cargo() { # [PI_TARGETS="T..."] pi_cargo ARGS...: cargo for those targets (default: all) at once
    local t up envs=() args=()
    local -a ts
    read -r -a ts <<<"${PI_TARGETS:-${targets[*]}}"
    for t in "${ts[@]}"; do
        up="$(tr 'a-z-' 'A-Z_' <<<"$t")"
        envs+=("CARGO_TARGET_${up}_LINKER=${gnu[$t]}-gcc" "CARGO_TARGET_${up}_RUNNER=${qemu[$t]}"
            "CC_${t//-/_}=${gnu[$t]}-gcc" "AR_${t//-/_}=${gnu[$t]}-ar")
        args+=(--target "$t")
    done
    # One target at a time: its programs run their own children under qemu.
    ((${#ts[@]} == 1)) && envs+=("OUTLET_TEST_RUNNER=${qemu[${ts[0]}]}")
    tests/settle-build-outputs "$CARGO_TARGET_DIR"
    env RUSTC="$DEBIAN_RUSTC" RUSTDOC=/usr/bin/rustdoc CARGO_PROFILE_DEV_DEBUG=line-tables-only "${envs[@]}" \
        "$DEBIAN_CARGO" "$@" --locked "${args[@]}"
}
# Both targets build in one cargo run: one job queue for the two cores, so
# while one target compiles a long crate on one core (the release profile
# has codegen-units = 1 and a fat LTO link, both serial) the other target's
# crates fill the second core, and the host's build scripts and proc macros
# are compiled once.

# --- Release builds and packages ------------------------------------------------
log "release build: ${targets[*]}"
timed "release build" pi_cargo build --release -p outlet-agent --bin outlet-agent --no-default-features ||
    abort "cargo build --release (${targets[*]})"

for t in "${targets[@]}"; do
    a="${deb_arch[$t]}"
    bin="$CARGO_TARGET_DIR/$t/release/outlet-agent"

    log "$t: binary"
    header="$(readelf -h "$bin")"
    machine_ok() { grep -qE "Machine: +${machine[$t]}\$" <<<"$header" || { grep Machine <<<"$header"; return 1; }; }
    check "$t: ELF machine ${machine[$t]}" machine_ok
    if [[ "$a" == armhf ]]; then
        check "$t: hard-float ABI (armhf)" grep -q "hard-float ABI" <<<"$header"
    fi
    size_mb="$(du -m "$bin" | cut -f1)"
    check "$t: binary ${size_mb} MB <= $SIZE_MAX_MB MB" test "$size_mb" -le "$SIZE_MAX_MB"
    glibc_max="$(glibc_max_of "$bin")"
    check "$t: newest glibc symbol ${glibc_max:-?} <= $GLIBC_MAX" glibc_at_most "$glibc_max"
    "${qemu[$t]}" "$bin" version || true
    check "$t: version under qemu: certificate-chain verification enforced" bash -c \
        '"$1" "$2" version | grep -qx "certificate-chain verification: enforced"' _ "${qemu[$t]}" "$bin"
    config_ok() {
        local out
        out="$("${qemu[$t]}" "$bin" check-config --config packaging/agent.toml 2>&1)" || { echo "$out"; return 1; }
        grep -qx 'data_dir = "/var/lib/outlet-agent"' <<<"$out" || { echo "$out"; return 1; }
    }
    check "$t: check-config under qemu accepts the shipped config" config_ok
    bad_config_refused() {
        local out status=0
        printf '[mqtt]\nkeepalive_secs = "soon"\n' >"$work/bad.toml"
        out="$("${qemu[$t]}" "$bin" check-config --config "$work/bad.toml" 2>&1)" || status=$?
        ((status == 2)) && grep -q "configuration error: $work/bad.toml" <<<"$out" ||
            { echo "  exit $status: $out"; return 1; }
    }
    check "$t: check-config under qemu refuses a broken config" bad_config_refused

    log "$t: cargo deb"
    mkdir -p "$CARGO_TARGET_DIR/debian"
    t0="$(now)"
    deb="$(cargo deb -p outlet-agent --target "$t" --no-build --no-strip \
        --output "$CARGO_TARGET_DIR/debian/" | tail -n 1)" || abort "$t: cargo deb"
    seconds["$a cargo deb"]="$(elapsed "$t0" "$(now)")"
    echo "$deb"
    [[ -f "$deb" ]] || abort "$t: cargo deb did not report a .deb ($deb)"
    field_is() { [[ "$(dpkg-deb -f "$deb" "$1")" == "$2" ]] || { echo "  $1: $(dpkg-deb -f "$deb" "$1") (want $2)"; return 1; }; }
    check "$t: package Architecture: $a" field_is Architecture "$a"
    check "$t: package file name ends in _$a.deb" test "${deb%_"$a".deb}" != "$deb"
    packaged_same() {
        dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/bin/outlet-agent | cmp -s - "$bin"
    }
    check "$t: packaged binary is the release build" packaged_same
    depends_libc() { dpkg-deb -f "$deb" Depends | grep -qE '(^|, )libc6( |,|$)' || { echo "  Depends: $(dpkg-deb -f "$deb" Depends)"; return 1; }; }
    check "$t: Depends: libc6 (dpkg-shlibdeps read the multiarch libc)" depends_libc
done

# --- Test builds -------------------------------------------------------------
# One dev build (unoptimised: compiling is what costs here, and the suites run
# in a few minutes even emulated) for both targets, in one cargo run: the
# store's and the display's test suites, and the agent's `demo` build (the
# agent accepts the fake server's endpoint on loopback only) that the host's
# harness drives below. Built apart, the two builds resolved different
# features for the crates they share (the agent's dependencies turn on more),
# so those crates compiled twice per target. Built together, every crate of
# the store's and display's tests has the features it has in the host's
# `tests/run` build of the whole workspace: the suites are built for ARM
# exactly as they are built and run on the host.
#
# cargo builds a package's binary in a test build only for its integration
# tests, so the agent's `e2e_pairing` test is built too (never run here);
# `--lib` also builds the agent's unit tests (not run either). The doc tests
# are compiled and run in the test step, as `cargo test` did.
#
# Line tables only, no full debug info: a panic still names file and line,
# and the builds and links are lighter (pi_cargo sets
# CARGO_PROFILE_DEV_DEBUG; the host's target/ keeps the workspace's own
# profile, so `tests/run`'s build is reused).
log "test build: store and display suites, the agent's demo build"
# The store's and display's manifests and integration tests (cargo has no
# per-package target selection: each test is named; a new test file joins by
# itself).
suite_metadata() {
    cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] in ("outlet-store", "outlet-display"):
        print("manifest", p["manifest_path"])
        for t in p["targets"]:
            if "test" in t["kind"]:
                print("test", t["name"])'
}
suite_manifests=()
test_args=()
while read -r kind value; do
    case "$kind" in
    manifest) suite_manifests+=("$value") ;;
    test) test_args+=(--test "$value") ;;
    esac
done < <(suite_metadata)
((${#suite_manifests[@]} == 2 && ${#test_args[@]})) ||
    abort "cargo metadata: no outlet-store and outlet-display with integration tests"
suites=(-p outlet-store -p outlet-display -p outlet-agent --no-default-features --features outlet-agent/demo)
# The store's and display's test executables, from cargo's messages: one line
# per executable, "<target triple> <package directory> <executable>" (tabs).
executables() {
    python3 -c '
import json, os, sys
root, manifests = sys.argv[1], sys.argv[2:]
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m["profile"]["test"] or not m.get("executable"):
        continue
    if m["manifest_path"] not in manifests:
        continue
    exe = m["executable"]
    triple = os.path.relpath(exe, root).split(os.sep)[0]
    print(triple, os.path.dirname(m["manifest_path"]), exe, sep="\t")
' "$CARGO_TARGET_DIR" "${suite_manifests[@]}"
}
test_build() {
    pi_cargo test --no-run --message-format=json-render-diagnostics "${suites[@]}" --lib "${test_args[@]}" --test e2e_pairing \
        >"$work/unit-build.json" 2>"$work/unit-build.log" || { tail -n 60 "$work/unit-build.log"; return 1; }
    executables <"$work/unit-build.json" >"$work/unit-tests.list"
    cut -f 3 "$work/unit-tests.list"
}
timed "test build" test_build || abort "cargo test --no-run ${suites[*]} (${targets[*]})"

# The host harness, built as `tests/run` builds it (the whole workspace, so
# the same features and, after `tests/run`, nothing to rebuild). Verbose:
# should cargo rebuild anything, its "Dirty" lines say why.
log "host harness"
harness_build() {
    local status=0
    tests/settle-build-outputs "$repo/target"
    env CARGO_TARGET_DIR="$repo/target" cargo nextest run --workspace --no-run --cargo-verbose \
        >"$work/harness-build.log" 2>&1 || status=$?
    grep -E '^ *(Dirty|Compiling|Finished|error)' "$work/harness-build.log" || true
    ((status == 0)) || { tail -n 40 "$work/harness-build.log"; return 1; }
}
timed "host harness build" harness_build || abort "cargo nextest run --workspace --no-run"

for t in "${targets[@]}"; do
    a="${deb_arch[$t]}"
    log "$t: store and display tests under qemu"
    # What `cargo test` would do for these suites: each test executable from
    # its package's directory, through qemu, then the doc tests (compiled for
    # $t; the same selection and features as the build, so nothing rebuilds).
    unit_tests() {
        local status=0 triple dir exe ran=0
        : >"$work/unit-$a.log"
        while IFS=$'\t' read -r triple dir exe; do
            [[ "$triple" == "$t" ]] || continue
            ran=$((ran + 1))
            printf '     Running %s\n' "${exe#"$CARGO_TARGET_DIR"/}" >>"$work/unit-$a.log"
            (cd "$dir" && OUTLET_TEST_RUNNER="${qemu[$t]}" "${qemu[$t]}" "$exe") >>"$work/unit-$a.log" 2>&1 || status=1
        done <"$work/unit-tests.list"
        # The unit tests of both libraries and every integration test.
        ((ran == 2 + ${#test_args[@]} / 2)) ||
            { echo "  $ran test executables for $t, want $((2 + ${#test_args[@]} / 2))" | tee -a "$work/unit-$a.log"; status=1; }
        PI_TARGETS="$t" pi_cargo test --doc "${suites[@]}" >>"$work/unit-$a.log" 2>&1 || status=1
        grep -E '^(test result|     Running|   Doc-tests)' "$work/unit-$a.log" || true
        ((status == 0)) || { tail -n 60 "$work/unit-$a.log"; return 1; }
    }
    timed "$a store+display tests" check "$t: store and display test suites pass under qemu" unit_tests

    log "$t: end-to-end pairing of the emulated agent"
    e2e() {
        OUTLET_AGENT_TEST_BIN="$CARGO_TARGET_DIR/$t/debug/outlet-agent" \
            OUTLET_TEST_RUNNER="${qemu[$t]}" CARGO_TARGET_DIR="$repo/target" \
            cargo nextest run --workspace --no-fail-fast -E 'binary(e2e_pairing) & (test(=the_qr_on_the_screen_links_the_outlet_and_its_number_is_known) | test(=restarts_after_sigterm_and_sigkill_reconnect_without_a_qr))'
    }
    timed "$a e2e pairing" check "$t: emulated agent pairs, reaches connected, restarts without a QR" e2e
done

# --- Summary -----------------------------------------------------------------
log "summary"
for t in "${targets[@]}"; do
    a="${deb_arch[$t]}"
    bin="$CARGO_TARGET_DIR/$t/release/outlet-agent"
    [[ -f "$bin" ]] && echo "$t: $(du -h "$bin" | cut -f1), newest glibc symbol $(glibc_max_of "$bin")"
done
for name in tools "${!seconds[@]}"; do
    [[ -n "${seconds[$name]:-}" ]] && printf '%-26s %8s s\n' "$name" "${seconds[$name]}"
done | sort -u
echo "$passed passed, $failed failed"
((failed == 0))
