#!/bin/sh
# Prepare a machine for development, tests and the lab:
#   - as root: the Debian packages the tests and the QEMU lab need (skipped when the list is unchanged);
#   - always: the project venv (.venv) with the package and its extras host, guest and dev.
# Re-running is cheap: both steps keep a stamp of what they installed.
set -eu
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

# Host tools: QEMU (TCG) and image building for the lab, libiscsi tools and sg3-utils to probe LUNs,
# tshark to decode our FC captures, strongSwan's charon as the IKEv2 interop peer, the Debian build
# tools and lintian for `make deb`, systemd for systemd-analyze, libvirt-clients and libxml2-utils for
# virt-xml-validate, graphviz for docs/architecture.svg.
APT_PACKAGES="python3 python3-venv python3-pip make git
 qemu-system-x86 qemu-utils qemu-block-extra debootstrap busybox-static cpio kmod e2fsprogs
 libiscsi-bin sg3-utils tshark
 strongswan-charon strongswan-swanctl libstrongswan-standard-plugins libstrongswan-extra-plugins
 dpkg-dev build-essential debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
 python3-wheel python3-click python3-cryptography lintian systemd
 libvirt-clients libxml2-utils graphviz"

apt_stamp=/var/lib/edifd-dev/apt.stamp
want=$(echo $APT_PACKAGES | tr ' ' '\n' | sort | tr '\n' ' ')
if [ "$(id -u)" -eq 0 ]; then
    if [ "$(cat "$apt_stamp" 2>/dev/null)" != "$want" ]; then
        echo "setup: apt-get install (lab, tshark, strongSwan)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        # charon must not start as a system service: the tests run their own instances.
        apt-get install -y -q --no-install-recommends $APT_PACKAGES >/dev/null
        mkdir -p "$(dirname "$apt_stamp")"
        echo "$want" > "$apt_stamp"
    fi
else
    echo "setup: not root, skipping apt packages (the lab and interop tests need them)" >&2
fi

# Prefer Debian's interpreter: it is what the lab guests run. Any python3 >= 3.11 works.
PY=${PYTHON:-python3}
[ -x /usr/bin/python3 ] && PY=${PYTHON:-/usr/bin/python3}
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: pip install -e .[host,guest,metrics,dev]"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e '.[host,guest,metrics,dev]'
    touch "$stamp"
fi
