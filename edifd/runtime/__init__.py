"""The asyncio runtime that joins the sans-IO cores: the EDIF engine (the control channel's request
handler driving one HBA port through its security-control interface). See docs/engine.md.
"""
