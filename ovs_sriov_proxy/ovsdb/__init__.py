"""Managing the bridges the proxy serves through OVSDB (the [ovsdb] table).

`model` and `plan` are pure (states in, decisions out), `memory` keeps what attached bridges had
before, `idl` is the only module that uses ovsdbapp, `manager` runs it all on the event loop,
`offload` counts offloaded flows and `report` formats the status. See docs/architecture.md,
"OVSDB: one thread, values across it".
"""
