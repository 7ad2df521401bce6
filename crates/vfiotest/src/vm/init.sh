#!/bin/busybox sh
# vfiotest guest init: mount, reserve hugepages, bind the devices, run the suite, power off.
# Lines starting with "vfiotest-vm: " are read by the host.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# vfiotest.no_debugfs leaves debugfs unmounted: a machine without an IOMMU page-table reader.
grep -q vfiotest.no_debugfs /proc/cmdline || mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
# vfiotest.rm_node=PATH,... removes device nodes: a host that hides what its kernel has.
for node in $(sed -n 's/.*vfiotest\.rm_node=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' '); do
    rm -f "$node"
done
if grep -q vfiotest.probe /proc/cmdline; then
    echo "vfiotest-vm: probe-ok"
    poweroff -f
fi
. /etc/vfiotest.env
hugepages() { cat /sys/kernel/mm/hugepages/hugepages-$1/nr_hugepages 2>/dev/null || echo 0; }
echo "vfiotest-vm: booted $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus, hugetlb 1G:$(hugepages 1048576kB) 2M:$(hugepages 2048kB)"
set -- $VFIOTEST_ARGS
if [ "$1" = setup-proof ]; then
    # The devices stay on their own drivers: taking them is what is tested.
    echo "vfiotest-vm: begin"
    /bin/busybox sh /bin/setup-proof $VFIOTEST_BDFS
    echo "vfiotest-vm: end exit=$?"
    poweroff -f
fi
for bdf in $VFIOTEST_BDFS; do
    echo "vfiotest-vm: setup $(/bin/vfiotest setup "$bdf" 2>&1)"
done
echo "vfiotest-vm: begin"
# One of several machines runs only its share of the programs.
units=$(sed -n 's/.*vfiotest\.units=\([0-9,]*\).*/\1/p' /proc/cmdline)
set -- $VFIOTEST_ARGS
if [ "$1" = bench ]; then
    # The bench measures on the first device unless told otherwise.
    VFIO_SELFTESTS_BDF=$VFIOTEST_BDFS /bin/vfiotest "$@"
else
    /bin/vfiotest run ${units:+--units $units} "$@" $VFIOTEST_BDFS
fi
code=$?
# Nothing may outlive the suite: a program that makes VFs removes them.
for numvfs in /sys/bus/pci/devices/*/sriov_numvfs; do
    [ "$(cat "$numvfs")" = 0 ] || echo "vfiotest-vm: left behind: $(basename "$(dirname "$numvfs")") has $(cat "$numvfs") VFs"
done
echo "vfiotest-vm: end exit=$code"
for bdf in $VFIOTEST_BDFS; do
    /bin/vfiotest cleanup "$bdf" >/dev/null 2>&1
done
poweroff -f
