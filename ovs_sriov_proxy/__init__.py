"""ovs-sriov-proxy: an OpenFlow proxy between OVS bridges and their controllers."""

__version__ = "0.1.0"
