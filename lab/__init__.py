"""The edifd QEMU lab: a cached Debian guest image, TCG VMs with 9p shares, guest scenarios, and ``lab up``.

Host side runs on the project venv or Debian's python3 (stdlib only). The guest side (``lab.guest``) runs
inside the VMs with Debian's python3 as ``PYTHONPATH=/src python3 -m lab.guest.<script>``, so importing this
package must stay free of side effects and host-only imports.
"""
