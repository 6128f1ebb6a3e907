"""The emulated-device channel: the control LUN's parked READs (and, with issue 4, the message flow)."""
