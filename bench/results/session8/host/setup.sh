set -e
ip netns del hc 2>/dev/null || true
ip netns del sink 2>/dev/null || true
ip netns add hc; ip netns add sink
ip link add v0 netns hc type veth peer name v1 netns sink
ip -n hc addr add 10.9.0.1/24 dev v0; ip -n hc link set v0 up; ip -n hc link set lo up
ip -n sink addr add 10.9.0.2/24 dev v1; ip -n sink link set v1 up; ip -n sink link set lo up
ip netns exec sink sysctl -qw net.core.somaxconn=4096
ip netns exec hc sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"
