#!/bin/busybox sh
# /init of the L1 VM of memtide's standard-KVM lane (kvm_amd inside QEMU
# TCG). Written by `cargo xtask lane`; see docs/lanes.md.
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin /out
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The kernel's console is ttyS2 (a file on the host); the command's output
# goes to ttyS0 (the host's terminal and l1-console.log).
exec > /dev/ttyS0 2>&1
# No tmpfs over /tmp: the root file system is already in RAM, and the
# workspace (hence the command's directory) may itself live under /tmp.
# Heartbeat on the second serial port: the host counts L1 as hung when
# it stops (xtask/src/lane/qemu.rs, HEARTBEAT_LIMIT).
(while :; do echo beat > /dev/ttyS1; sleep 10; done) &
echo "memtide-lane: L1 up at $(cut -d' ' -f1 /proc/uptime) s, $(grep -c ^processor /proc/cpuinfo) CPUs"
while read -r m params; do
    # shellcheck disable=SC2086 # params are separate words
    if ! insmod "$m" $params; then
        echo "memtide-lane: error: insmod $m $params failed"
        echo "memtide-lane: status=lane-setup"
        poweroff -f
    fi
done < /lane/modules
if [ ! -c /dev/kvm ]; then
    echo "memtide-lane: error: /dev/kvm did not appear after loading kvm_amd (no SVM in the L1 CPU?)"
    echo "memtide-lane: status=lane-setup"
    poweroff -f
fi
mkdir -p /out/consoles
. /lane/env
mkdir -p "$LANE_CWD"
if ! cd "$LANE_CWD"; then
    echo "memtide-lane: status=lane-setup"
    poweroff -f
fi
echo "memtide-lane: running the command at $(cut -d' ' -f1 /proc/uptime) s"
sh /lane/cmd.sh
status=$?
echo "memtide-lane: command ended at $(cut -d' ' -f1 /proc/uptime) s"
dmesg > /out/l1-dmesg.txt
if [ -b /dev/vda ]; then
    tar -cf /dev/vda -C /out . || echo "memtide-lane: error: cannot write the results disk"
fi
sync
echo "memtide-lane: status=$status"
poweroff -f
