#!/usr/bin/env bash
# Provision the lab's "controller" VM (see Vagrantfile and docs/deployment.md), as root:
#   - scripts/bootstrap.sh, the same setup the tests use (it installs ovs-testcontroller);
#   - ovs-testcontroller, a learning switch speaking OpenFlow 1.3, as the systemd unit
#     lab-testcontroller.service, listening on the private network. The proxy on the
#     hypervisor VM connects to it as a switch, once per bridge.
# Idempotent: Vagrant runs it on every `vagrant up` and `vagrant provision`.
#
# Usage: provision-controller.sh LISTEN_IP [PORT] [REPO_DIR]
#   LISTEN_IP  this VM's address on the private network, e.g. 192.168.56.11
#   PORT       default 6633
#   REPO_DIR   this repository inside the VM (default: /vagrant)
set -euo pipefail

listen_ip=${1:?usage: provision-controller.sh LISTEN_IP [PORT] [REPO_DIR]}
port=${2:-6633}
repo=${3:-/vagrant}
unit=/etc/systemd/system/lab-testcontroller.service

say() { printf 'provision-controller: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "run as root"; exit 1; }

say "bootstrap (packages, .venv) from $repo"
"$repo/scripts/bootstrap.sh"

# Debian's own openvswitch-testcontroller service wants TLS keys it does not have and port
# 6653; the lab runs its own unit instead.
systemctl disable --now openvswitch-testcontroller.service >/dev/null 2>&1 || true

say "writing $unit (ptcp:$port:$listen_ip)"
cat > "$unit.new" <<EOF
# Written by lab/provision-controller.sh; reprovisioning overwrites it.
[Unit]
Description=ovs-testcontroller for the ovs-sriov-proxy lab (learning switch, OpenFlow 1.3)
Wants=network-online.target
After=network-online.target

[Service]
RuntimeDirectory=lab-testcontroller
ExecStart=/usr/bin/ovs-testcontroller -O OpenFlow13 --unixctl=/run/lab-testcontroller/ctl ptcp:$port:$listen_ip
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
mv "$unit.new" "$unit"
systemctl daemon-reload
systemctl enable lab-testcontroller.service
systemctl restart lab-testcontroller.service

for _ in $(seq 1 20); do
    if ss -ltn "sport = :$port" | grep -q LISTEN; then
        say "ovs-testcontroller listens on $listen_ip:$port"
        exit 0
    fi
    sleep 0.5
done
say "ovs-testcontroller is not listening on $listen_ip:$port; see: journalctl -u lab-testcontroller"
exit 1
