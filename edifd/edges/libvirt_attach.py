"""Attaching device XML to a libvirt domain with libvirt-python (Debian: python3-libvirt).

The module is imported only when an attach is asked for, so edifd and edifctl need it only then.
Every failure is an `AttachError` that says what to do: the module missing, libvirtd not answering at
the URI, no such domain, a CHAP secret libvirt does not have yet, a device libvirt refused (naming
what was attached before it). A controller the domain already has (same type and index) is not
attached again; one of another model at that index is refused.
"""

from __future__ import annotations

import importlib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

DEFAULT_URI = "qemu:///system"


class AttachError(RuntimeError):
    """An attach that did not happen (or happened only in part, which the text says)."""


class AttachUnavailable(AttachError):
    """Nothing to attach to yet: libvirt-python, libvirtd, the domain or a secret it needs is absent."""


@dataclass(frozen=True)
class DeviceXml:
    """One device to attach: its XML (one element) and a short description for messages."""

    xml: str
    what: str


def import_libvirt() -> ModuleType:
    try:
        return importlib.import_module("libvirt")
    except ImportError:
        raise AttachUnavailable("libvirt-python is not installed: apt install python3-libvirt "
                                "(or pip install libvirt-python)") from None


def _message(mod: ModuleType, exc: BaseException) -> str:
    get = getattr(exc, "get_error_message", None)
    text = get() if callable(get) else None
    return str(text or exc)


def _flags(mod: ModuleType, live: bool, config: bool) -> int:
    """libvirt's AFFECT flags: neither means the current state (live if running, else the definition)."""
    flags = 0
    if live:
        flags |= mod.VIR_DOMAIN_AFFECT_LIVE
    if config:
        flags |= mod.VIR_DOMAIN_AFFECT_CONFIG
    return flags or mod.VIR_DOMAIN_AFFECT_CURRENT


def _controllers(dom: Any, mod: ModuleType, config: bool) -> dict[tuple[str, str], str]:
    """(type, index) -> model of the domain's controllers, in the definition or the running domain."""
    xml = dom.XMLDesc(mod.VIR_DOMAIN_XML_INACTIVE if config else 0)
    root = ET.fromstring(xml)
    return {(c.get("type", ""), c.get("index", "")): c.get("model", "")
            for c in root.iterfind("./devices/controller")}


def attach(devices: Sequence[DeviceXml], domain: str, *, live: bool = False, config: bool = False,
           uri: str = DEFAULT_URI, iscsi_secret_usages: Sequence[str] = (),
           libvirt: ModuleType | None = None) -> list[str]:
    """Attach `devices` in order to `domain` and return what was attached (or found already there).

    `iscsi_secret_usages`: the libvirt secrets (usage type iscsi) the disks' <auth> names; each must
    exist before the disk is attached, or libvirtd would start QEMU's login without a password."""
    mod = libvirt if libvirt is not None else import_libvirt()
    error = getattr(mod, "libvirtError", Exception)
    try:
        conn = mod.open(uri)
    except error as e:
        raise AttachUnavailable(f"cannot connect to libvirtd at {uri}: {_message(mod, e)}; is libvirtd "
                                "running (systemctl status libvirtd), and are you root?") from None
    if conn is None:
        raise AttachUnavailable(f"cannot connect to libvirtd at {uri}")
    try:
        try:
            dom = conn.lookupByName(domain)
        except error as e:
            raise AttachUnavailable(f"no domain {domain!r} at {uri} ({_message(mod, e)}); virsh list "
                                    "--all shows the domains") from None
        for usage in iscsi_secret_usages:
            try:
                conn.secretLookupByUsage(mod.VIR_SECRET_USAGE_TYPE_ISCSI, usage)
            except error:
                raise AttachUnavailable(f"libvirt has no iSCSI secret {usage!r} at {uri}: define it and "
                                        "set its value first (edifctl libvirt-xml --secret-xml prints the "
                                        "commands)") from None
        flags = _flags(mod, live, config)
        done: list[str] = []
        existing: dict[tuple[str, str], str] | None = None
        for dev in devices:
            el = ET.fromstring(dev.xml)
            if el.tag == "controller":
                if existing is None:
                    existing = _controllers(dom, mod, config and not live)
                key = (el.get("type", ""), el.get("index", ""))
                if key in existing:
                    if existing[key] != el.get("model", ""):
                        raise AttachError(f"{domain} already has {key[0]} controller {key[1]} of model "
                                          f"{existing[key] or 'default'}; give another index (--controller)")
                    done.append(f"{dev.what} (already there)")
                    continue
            try:
                dom.attachDeviceFlags(dev.xml, flags)
            except error as e:
                so_far = f"; attached before it: {', '.join(done)}" if done else ""
                raise AttachError(f"libvirt refused {dev.what} for {domain}: {_message(mod, e)}{so_far}"
                                  ) from None
            done.append(dev.what)
        return done
    finally:
        try:
            conn.close()
        except error:
            pass
