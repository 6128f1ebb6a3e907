"""What runs inside the lab VMs (Debian's python3, stdlib plus the project's source on ``/src``).

Script names say on which machine they run: ``host_*`` on VM-H, the KVM host that runs edifd; ``edifvm_*``
on VM-S, the EDIF VM (edif-agent, QEMU's iSCSI initiator); the rest (``common``, ``probe``,
``edifd_process``, ``kernel_modules``) on either. The second half of a script's name is the host-side
scenario that boots it, ``lab/scenario_<name>.py`` (``host_iscsi`` also serves ``lab up``, ``edifvm_iscsi``
also the luns scenario); ``host_tcmu_check`` is a standalone real-kernel check of edifd.tcmu
(``python3 -m lab.guest.host_tcmu_check`` as root).
"""
