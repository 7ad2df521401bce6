#!/bin/bash
# Build a vfiotest guest kernel out of tree: SRC (Debian's linux-source unpacked by vfiotest, a
# patched copy of it, or the user's own tree, which is only read) configured as
# `make allnoconfig` + FRAGMENT, built in BUILD.
#
# usage: build-kernel.sh SRC BUILD FRAGMENT
#
# On stdout, for vfiotest: `lacks CONFIG_X` for each option of FRAGMENT that SRC's Kconfig doesn't
# define (an older kernel's gap: left out, not an error), `previous-objects N` (what this BUILD's
# last build made), then one line per object built. On success BUILD/arch/x86/boot/bzImage is the
# kernel; on failure the whole log is BUILD/build.log.
#
# FRAGMENT is merged over `make allnoconfig`, so the kernel has what it names and what that
# needs, and nothing else: minutes to build instead of defconfig's quarter of an hour. Run again
# on the same BUILD, only what changed is rebuilt: the configuration is regenerated, but a
# .config that comes out the same keeps its timestamp, so nothing is rebuilt for it.
set -euo pipefail

src=$(realpath "$1") build=$(realpath -m "$2") fragment=$(realpath "$3")
say() { printf '[kernel] %s\n' "$*" >&2; }

mkdir -p "$build"
# One build per directory at a time: two makes in one O= directory corrupt each other.
exec 9>"$build/.lock"
flock 9

# The options this tree defines. One the fragment names that the tree lacks (CONFIG_IOMMUFD
# before 6.2, say) is reported and left out; one the tree has but olddefconfig drops (a missing
# dependency) stops the build below.
symbols=$build/.kconfig-symbols
find "$src" -name 'Kconfig*' -not -path '*/.git/*' -not -path "$build/*" -print0 |
    xargs -0 grep -hE '^[[:space:]]*(menu)?config[[:space:]]+[A-Za-z0-9_]+' |
    awk '{print "CONFIG_" $2}' | sort -u >"$symbols"
wanted=$build/.fragment
: >"$wanted"
while IFS= read -r line; do
    case $line in
    CONFIG_*)
        opt=${line%%=*}
        if grep -qx "$opt" "$symbols"; then echo "$line" >>"$wanted"; else echo "lacks $opt"; fi
        ;;
    *) echo "$line" >>"$wanted" ;;
    esac
done <"$fragment"

config=$build/.config
[ ! -f "$config" ] || cp -p "$config" "$build/.config.before"
make -s -C "$src" O="$build" allnoconfig >&2
"$src"/scripts/kconfig/merge_config.sh -m -O "$build" "$config" "$wanted" >/dev/null
make -s -C "$src" O="$build" olddefconfig >&2
if [ -f "$build/.config.before" ] && cmp -s "$build/.config.before" "$config"; then
    touch -r "$build/.config.before" "$config"
fi
rm -f "$build/.config.before"

# Every line the tree could take must have survived olddefconfig, or the guest silently lacks a mode.
missing=()
while IFS= read -r line; do
    case $line in
    CONFIG_*=n) opt=${line%=n}; grep -q "^$opt=" "$config" && missing+=("$opt (not unset)") ;;
    CONFIG_*) grep -qx "$line" "$config" || missing+=("$line") ;;
    esac
done <"$wanted"
if [ ${#missing[@]} -gt 0 ]; then
    echo "config-dropped ${missing[*]}"
    exit 1
fi

log=$build/build.log
objects='^  (CC|LD|AR|AS) '
echo "previous-objects $(grep -cE "$objects" "$log" 2>/dev/null || true)"
# (grep finds nothing in a build with nothing to do; only make's and tee's failures count.)
make -C "$src" O="$build" -j"$(nproc)" bzImage 2>&1 | tee "$log" | { grep --line-buffered -E "$objects" || true; }
