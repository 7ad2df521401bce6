#!/bin/bash
# Build the vfiotest guest kernel from Debian's linux-source-7.3 (trixie-backports).
#
# usage: build-kernel.sh CACHE_DIR FRAGMENT OUT_BZIMAGE
#
# The package is fetched with a private apt state so the machine's own sources stay as they are;
# the mirror is read from the machine's apt configuration. Downloads and the unpacked tree are kept
# in CACHE_DIR and reused. `vfiotest vm` embeds this script and keys OUT_BZIMAGE by source version
# and fragment hash, so it only runs when one of those changes.
set -euo pipefail

cache=$(realpath -m "$1") fragment=$(realpath "$2") out=$(realpath -m "$3")
pkg=linux-source-7.3
suite=trixie-backports
mkdir -p "$cache"
cd "$cache"

say() { printf '[kernel] %s\n' "$*" >&2; }

mirror() {
    local uri
    uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
    fi
    [ -n "$uri" ] || { echo "no Debian mirror found in /etc/apt sources" >&2; exit 1; }
    echo "$uri"
}

if ! ls "$pkg"_*.deb >/dev/null 2>&1; then
    say "fetching $pkg from $suite"
    apt_dir=$cache/apt
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb $(mirror) $suite main" >"$apt_dir/sources.list"
    apt_opts=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
    apt-get -q "${apt_opts[@]}" update >&2
    apt-get -q "${apt_opts[@]}" download "$pkg" >&2
fi
deb=$(ls "$pkg"_*.deb | sort -V | tail -n1)
version=${deb#"$pkg"_}
version=${version%%_*}

src=$cache/src-$version
if [ ! -f "$src/.unpacked" ]; then
    say "unpacking $deb"
    rm -rf "$src" "$cache/deb-root"
    dpkg-deb -x "$deb" "$cache/deb-root"
    mkdir -p "$src"
    tar -xJf "$cache"/deb-root/usr/src/"$pkg".tar.xz -C "$src" --strip-components=1
    rm -rf "$cache/deb-root"
    touch "$src/.unpacked"
fi

build=$cache/build-$(sha256sum "$fragment" | cut -c1-12)
mkdir -p "$build"
# One build per tree at a time: two makes in one O= directory corrupt each other.
exec 9>"$build/.lock"
flock 9
say "configuring in $build"
make -s -C "$src" O="$build" defconfig >&2
make -s -C "$src" O="$build" kvm_guest.config >&2
"$src"/scripts/kconfig/merge_config.sh -m -O "$build" "$build/.config" "$fragment" >/dev/null
make -s -C "$src" O="$build" olddefconfig >&2

# Every line of the fragment must have survived olddefconfig, or the guest silently lacks a mode.
missing=0
while read -r line; do
    case $line in
    CONFIG_*=n) opt=${line%=n}; grep -q "^$opt=" "$build/.config" && { say "not unset: $opt"; missing=1; } ;;
    CONFIG_*) grep -qx "$line" "$build/.config" || { say "not set: $line"; missing=1; } ;;
    esac
done <"$fragment"
[ $missing = 0 ] || { echo "kernel config fragment did not apply" >&2; exit 1; }

say "building bzImage with $(nproc) jobs (about 12 min on 2 cores)"
log=$build/build.log
if ! make -C "$src" O="$build" -j"$(nproc)" bzImage 2>&1 | tee "$log" |
    awk '/^  (CC|LD|AR|AS) / {n++; if (n % 250 == 0) {printf "[kernel] %d objects built (%s)\n", n, $2; fflush()}}' >&2; then
    tail -n 30 "$log" >&2
    echo "kernel build failed; full log in $log" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
cp "$build/arch/x86/boot/bzImage" "$out.tmp"
mv "$out.tmp" "$out"
say "done: $out ($version)"
