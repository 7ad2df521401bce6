#!/bin/bash
# Build the vfiotest guest kernel from Debian's linux-source-7.3 (trixie-backports).
#
# usage: build-kernel.sh CACHE_DIR LINUX_SOURCE_DEB FRAGMENT OUT_BZIMAGE
#
# FRAGMENT is merged over `make allnoconfig`, so the kernel has what it names and what that
# needs, and nothing else: a few minutes to build instead of defconfig's quarter of an hour.
#
# `vfiotest vm` downloads the package (with a private apt state, so the machine's own sources
# stay as they are), embeds this script, and keys OUT_BZIMAGE by source version and fragment
# hash, so it only runs when one of those changes. The unpacked tree and the build directory are
# kept in CACHE_DIR and reused.
set -euo pipefail

cache=$(realpath -m "$1") deb=$(realpath "$2") fragment=$(realpath "$3") out=$(realpath -m "$4")
pkg=linux-source-7.3
mkdir -p "$cache"
cd "$cache"

say() { printf '[kernel] %s\n' "$*" >&2; }

version=$(basename "$deb")
version=${version#"$pkg"_}
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
make -s -C "$src" O="$build" allnoconfig >&2
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

say "building bzImage with $(nproc) jobs"
log=$build/build.log
# Progress for vfiotest, on stdout: how many objects the last build of this tree made (0 if
# none), then one line per object as make reports it. Everything else goes to stderr.
objects='^  (CC|LD|AR|AS) '
echo "previous-objects $(grep -cE "$objects" "$log" 2>/dev/null || true)"
# (grep finds nothing in a build with nothing to do; only make's and tee's failures count.)
if ! make -C "$src" O="$build" -j"$(nproc)" bzImage 2>&1 | tee "$log" | { grep --line-buffered -E "$objects" || true; }; then
    tail -n 30 "$log" >&2
    echo "kernel build failed; full log in $log" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
cp "$build/arch/x86/boot/bzImage" "$out.tmp"
mv "$out.tmp" "$out"
say "done: $out ($version)"
