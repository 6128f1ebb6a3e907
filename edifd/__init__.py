"""edifd: FC-SP-2 EDIF for virtualized hosts.

The security software runs in a VM that the host reaches through an emulated SCSI disk.
"""

__version__ = "0.1.0"
