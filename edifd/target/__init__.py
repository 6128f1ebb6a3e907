"""The storage side: target ports (TCP listeners speaking FCIP), LUNs on sparse backing files, the
sans-IO FCP target session, configuration and the `edif-target` CLI. See docs/hba.md."""

from .server import LunConfig, TargetConfig, TargetPort, TargetPortConfig, TargetServer
from .session import Execute, LoginEvent, TargetSession

__all__ = ["Execute", "LoginEvent", "LunConfig", "TargetConfig", "TargetPort", "TargetPortConfig",
           "TargetServer", "TargetSession"]
