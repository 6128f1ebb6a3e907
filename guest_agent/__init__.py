"""edif-agent: the EDIF VM side of the emulated-disk channel."""
