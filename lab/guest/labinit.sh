#!/bin/sh
# PID 1 of the lab guest (after the initramfs switch_root). There is no systemd as init: this script brings up
# just what the scenarios need, runs /lab/run.sh from the per-run 9p share and powers off. Every milestone is
# printed to the serial console as "LAB: <what> uptime=<s>" so the host can follow the boot without a network.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mark() { echo "LAB: $* uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/console; }
p9() { mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,$3" "$1" "$2"; }

mount -t proc proc /proc
mount -t sysfs sys /sys
[ -e /dev/null ] || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
hostname "$(sed -n 's/.*lab.name=\([^ ]*\).*/\1/p' /proc/cmdline)" 2>/dev/null
mark booted

# udev creates /dev/sg*, /dev/uio*, /dev/disk/by-* and runs the rules rtslib and pyudev rely on.
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add
udevadm settle -t 20

# lab.lio=0 on the kernel command line: an initiator-only guest (VM-S) skips the LIO target modules.
# The LIO set is written into the image by lab.image from lab.guest.kernel_modules (one list).
lio_mods=$(cat /etc/edif-lab/lio-modules)
grep -q 'lab.lio=0' /proc/cmdline && lio_mods=""
mods_ok=1
for m in $lio_mods sd_mod sg virtio_scsi virtio_net; do
    modprobe "$m" || { mods_ok=0; echo "LAB: modprobe $m failed" > /dev/console; }
done
if [ -n "$lio_mods" ]; then
    mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
    [ -e /sys/kernel/config/target/version ] || mods_ok=0
fi
udevadm settle -t 10
if [ "$mods_ok" = 1 ]; then mark modules ok; else mark modules FAILED; fi

# slirp's fixed addressing (-netdev user defaults): no DHCP client needed.
ip link set lo up
nic=$(ls /sys/class/net | grep -v '^lo$' | head -n1)
if [ -n "$nic" ]; then
    ip link set "$nic" up && ip addr add 10.0.2.15/24 dev "$nic" && ip route add default via 10.0.2.2 \
        && mark "network $nic 10.0.2.15/24"
fi

rc=255
if p9 src /src ro; then :; else mark "no src share"; fi
if p9 lab /lab rw && [ -f /lab/run.sh ]; then
    mark "run.sh start"
    (cd /lab && /bin/sh /lab/run.sh > /lab/out.log 2>&1)
    rc=$?
else
    mark "no lab share or no run.sh"
fi
mark "run.sh rc=$rc"
dmesg > /lab/dmesg.log 2>/dev/null
sync
umount /lab /src 2>/dev/null
mark DONE
/bin/busybox poweroff -f
