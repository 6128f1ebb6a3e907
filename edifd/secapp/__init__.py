"""The FC-SP-2 security application, sans-IO: what the EDIF VM's agent and the storage target share.

`config` (its TOML policy and credentials; the one module that reads files), `relay` (IKEv2 carried in
AUTH_ELS, child SAs to SA_UPDATE bodies), `responder` (the responder role a target runs) and `app` (the
initiator role the EDIF VM runs over the channel: `SecurityApp`, composed of `discovery`, `ike_driver`
and `installer` over the per-target records in `session`; its `events` for logs). `guest_agent` is the
EDIF VM's I/O edge and CLI around `app`; `edifd.target` runs `responder` on the storage side
(docs/secapp.md).
"""
