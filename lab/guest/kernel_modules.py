"""The kernel modules of the lab guest, one list for both sides: ``lab.image`` copies them (with their
dependency closure) into the root filesystem, ``lab.guest.probe`` checks in the guest that they loaded.

labinit.sh modprobes the LIO set at boot from /etc/edif-lab/lio-modules, which ``lab.image`` writes from
``LIO_MODULES`` (``lab.lio=0`` skips it on VM-S, the EDIF VM).
"""

# LIO: configfs, the target core, TCMU (edifd's backstores), the tcm_loop / iSCSI / vhost fabrics.
LIO_MODULES: tuple[str, ...] = (
    "configfs",
    "target_core_mod",
    "target_core_user",
    "tcm_loop",
    "iscsi_target_mod",
    "target_core_file",
    "target_core_iblock",
    "target_core_pscsi",
    "vhost_scsi",
)
# What the scenarios need loaded to use a LUN: LIO plus the SCSI disk and generic drivers.
TARGET_MODULES: tuple[str, ...] = (*LIO_MODULES, "sd_mod", "sg")
# Everything copied into the image: the above plus the virtio devices, the root filesystem and 9p.
GUEST_MODULES: tuple[str, ...] = (
    *TARGET_MODULES,
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "ext4",
    "9p",
    "9pnet_virtio",
)
