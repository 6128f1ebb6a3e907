#!/bin/busybox sh
# Initramfs /init: load the few modules needed to reach the ext4 root on virtio-blk, then switch_root to
# /sbin/labinit. Busybox only; the module list (dependency order) is written by lab.image at build time.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /lib/modules/load.list
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 40 ]; do sleep 0.25; i=$((i + 1)); done
if ! mount -t ext4 /dev/vda /mnt/root; then
    echo "LAB: root mount failed" > /dev/console
    poweroff -f
fi
umount /proc /sys
mount --move /dev /mnt/root/dev
exec switch_root /mnt/root /sbin/labinit
