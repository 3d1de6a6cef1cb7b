#!/usr/bin/env bash
# Provision the lab's "hypervisor" VM (see Vagrantfile and docs/deployment.md), as root:
#   - scripts/bootstrap.sh, the same setup the tests use: Open vSwitch and ovs-testcontroller
#     from apt, .venv with the package in the repository;
#   - the system Open vSwitch (kernel datapath) with other_config:hw-offload=true;
#   - br-int, fail_mode=secure, OpenFlow 1.3, with three veth pairs standing in for SR-IOV VF
#     representors: vfN-rep in br-int, its peer vfN in network namespace vmN (the "VM");
#   - /etc/ovs-sriov-proxy/proxy.toml naming the controller VM as the upstream controller;
#   - the proxy as the systemd unit deploy/ovs-sriov-proxy.service, and br-int pointed at it.
# Idempotent: Vagrant runs it on every `vagrant up` and `vagrant provision` (the veth pairs and
# namespaces do not survive a reboot).
#
# Usage: provision-hypervisor.sh CONTROLLER_TARGET [REPO_DIR]
#   CONTROLLER_TARGET  the upstream controller, e.g. tcp:192.168.56.11:6633
#   REPO_DIR           this repository inside the VM (default: /vagrant)
set -euo pipefail

controller_target=${1:?usage: provision-hypervisor.sh CONTROLLER_TARGET [REPO_DIR]}
repo=${2:-/vagrant}
config_dir=/etc/ovs-sriov-proxy
bridge=br-int
vf_count=3

say() { printf 'provision-hypervisor: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "run as root"; exit 1; }

say "bootstrap (packages, .venv) from $repo"
"$repo/scripts/bootstrap.sh"

# The unit runs `ovs-sriov-proxy` by name; systemd finds it in /usr/local/bin.
ln -sfn "$repo/.venv/bin/ovs-sriov-proxy" /usr/local/bin/ovs-sriov-proxy

# bootstrap.sh keeps the package's postinst from starting Open vSwitch; here we want it.
# ovs-ctl loads the openvswitch kernel module.
systemctl enable --now openvswitch-switch.service

# hw-offload is read when ovs-vswitchd starts: restart it when the setting changes. In a VM
# there is no NIC that offloads, so OVS enables its flow API, logs it, and offloads nothing.
if [ "$(ovs-vsctl --if-exists get Open_vSwitch . other_config:hw-offload)" != '"true"' ]; then
    say "setting other_config:hw-offload=true and restarting Open vSwitch"
    ovs-vsctl set Open_vSwitch . other_config:hw-offload=true
    systemctl restart openvswitch-switch.service
fi

say "creating $bridge with $vf_count VF representor stand-ins"
ovs-vsctl --may-exist add-br "$bridge" -- set bridge "$bridge" fail_mode=secure protocols=OpenFlow13
for i in $(seq 0 $((vf_count - 1))); do
    rep="vf$i-rep" vf="vf$i" ns="vm$i"
    mac=$(printf 'fa:16:3e:00:00:%02x' $((0x10 + i)))
    ip netns list | grep -qw "$ns" || ip netns add "$ns"
    if ! ip link show "$rep" >/dev/null 2>&1; then
        ip link add "$rep" type veth peer name "$vf"
        ip link set "$vf" netns "$ns"
    fi
    ip link set "$rep" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$vf" address "$mac"
    ip -n "$ns" link set "$vf" up
    ip -n "$ns" addr replace "10.0.0.$((10 + i))/24" dev "$vf"
    # The external_ids Nova and Neutron put on a VM's port, so the lab's br-int looks like one.
    ovs-vsctl --may-exist add-port "$bridge" "$rep" -- set interface "$rep" \
        ofport_request=$((i + 1)) \
        external_ids:iface-id="lab-port-$i" \
        external_ids:attached-mac="$mac" \
        external_ids:vm-uuid="00000000-0000-4000-8000-0000000000$((10 + i))" \
        external_ids:iface-status=active
done

say "writing $config_dir/proxy.toml (upstream controller: $controller_target)"
install -d -m 0755 "$config_dir"
cat > "$config_dir/proxy.toml.new" <<EOF
# Written by lab/provision-hypervisor.sh; reprovisioning overwrites it.
[proxy]
listen = ["ptcp:6653:127.0.0.1"]
# ovs-testcontroller on the controller VM runs with -O OpenFlow13, and a controller must speak
# the bridge's version until version translation lands.
protocols = ["OpenFlow13"]
miss_fallback = "drop"

# The proxy answers ARP itself: flood it.
[[rules]]
flow = "priority=100,arp actions=flood"

# Everything else is asked of the controller VM (a learning switch).
[[controllers]]
name = "lab-controller"
target = "$controller_target"
EOF
ovs-sriov-proxy check-config --config "$config_dir/proxy.toml.new"
mv "$config_dir/proxy.toml.new" "$config_dir/proxy.toml"

say "installing and (re)starting ovs-sriov-proxy.service"
install -m 0644 "$repo/deploy/ovs-sriov-proxy.service" /etc/systemd/system/ovs-sriov-proxy.service
systemctl daemon-reload
systemctl enable ovs-sriov-proxy.service
systemctl restart ovs-sriov-proxy.service

ovs-vsctl set-controller "$bridge" tcp:127.0.0.1:6653 \
    -- set controller "$bridge" connection_mode=out-of-band max_backoff=2000
if ! ovs-vsctl --timeout=30 wait-until controller "$bridge" is_connected=true; then
    say "$bridge did not connect to the proxy; see: journalctl -u ovs-sriov-proxy"
    exit 1
fi

# The controller VM may not be up yet (`vagrant up hypervisor` alone): report, do not fail.
if ip netns exec vm0 ping -c 3 -W 2 10.0.0.11; then
    say "vm0 reaches vm1 through the proxy and the controller VM"
else
    say "vm0 cannot reach vm1 yet: is the controller VM up? (vagrant up controller)"
fi
ovs-sriov-proxy status
say "done; try: vagrant ssh hypervisor -c 'sudo ovs-sriov-proxy status'"
