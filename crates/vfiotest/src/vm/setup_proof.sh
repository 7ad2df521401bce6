#!/bin/busybox sh
# The setup/cleanup proof, run by init instead of the suite for `vfiotest vm --device BDF --
# setup-proof`: on an nvme the kernel's own driver holds, `vfiotest setup` refuses while the
# disk is swap, takes it when idle, and `vfiotest cleanup` gives it back, as a user would run
# them. Prints TAP; each test checks the driver after its step and the command's exit code.
bdf=$1
state=/run/vfiotest/setup.json
n=0
failed=0
driver() { d=$(readlink "/sys/bus/pci/devices/$bdf/driver"); echo "${d##*/}"; }
# check NAME WANT_DRIVER WANT_EXIT GOT_EXIT [OUTPUT_MUST_CONTAIN]
check() {
    n=$((n + 1))
    got=$(driver)
    said=yes
    [ -z "$5" ] || grep -q "$5" /tmp/out || said=no
    if [ "$got" = "$2" ] && [ "$4" = "$3" ] && [ $said = yes ]; then
        echo "ok $n vfio_setup.$1"
    else
        echo "not ok $n vfio_setup.$1"
        echo "# expected driver $2, exit $3${5:+, output with '$5'}; got driver ${got:-none}, exit $4:"
        sed 's/^/#   /' /tmp/out
        failed=1
    fi
}
step() { "$@" >/tmp/out 2>&1; }

echo "TAP version 13"
echo "1..11"
step true
check boots_on_its_driver nvme 0 0
disk=$(ls /sys/bus/pci/devices/$bdf/nvme/*/ | grep -m1 '^nvme[0-9]*n[0-9]*$')
step sh -c "mkswap /dev/$disk && swapon /dev/$disk"
code=$?
step /bin/vfiotest setup "$bdf"
check refuses_a_disk_in_use_as_swap nvme 1 $? "/dev/$disk is active swap"
step swapoff "/dev/$disk"
step /bin/vfiotest setup "$bdf"
check takes_an_idle_disk vfio-pci 0 $?
step grep -q '"driver": "nvme"' $state
check records_the_driver vfio-pci 0 $?
step /bin/vfiotest run vfio_pci_device_test "$bdf"
check runs_after_setup vfio-pci 0 $?
step /bin/vfiotest cleanup "$bdf"
check cleanup_restores_the_driver nvme 0 $? "$bdf: nvme (restored: driver nvme"
step /bin/vfiotest cleanup "$bdf"
check cleanup_again_changes_nothing nvme 0 $? "nothing to restore"
# A state file that can't be read: one line and the manual fix, and nothing touched. Then the
# saved state stands for what survived a crash, and cleanup still restores from it.
/bin/vfiotest setup "$bdf" >/dev/null 2>&1
cp $state /tmp/saved.json
echo '{garbage' >$state
step /bin/vfiotest cleanup "$bdf"
check corrupt_state_is_refused vfio-pci 1 $? "is corrupt"
cp /tmp/saved.json $state
step /bin/vfiotest cleanup "$bdf"
check cleanup_after_a_crash nvme 0 $?
# --force takes a disk in use (the swap on it is the user's problem then).
swapon "/dev/$disk" 2>/dev/null
step /bin/vfiotest setup --force "$bdf"
check force_takes_a_disk_in_use vfio-pci 0 $? "taking it anyway"
step /bin/vfiotest cleanup "$bdf"
check cleanup_after_force nvme 0 $?
[ $code = 0 ] || { echo "# mkswap/swapon failed"; failed=1; }
echo "# Totals: pass:$((n - failed)) fail:$failed xfail:0 xpass:0 skip:0 error:0"
exit $failed
