"""edifd: FC-SP-2 EDIF for virtualized hosts, with the security software in a VM reached through an emulated disk."""

__version__ = "0.1.0"
