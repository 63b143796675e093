# Sourced by the lab scripts: two_pods NAME NET makes namespaces NAME-a,
# NAME-b (pods, eth0 at NET.1 and NET.2/24) and NAME-sw (the switch's, with
# the pods' host ends pa and pb, up). The caller removes the namespaces.
two_pods() {
  local n
  for n in a b sw; do ip netns add "$1-$n"; ip -n "$1-$n" link set lo up; done
  for n in a b; do
    ip link add eth0 netns "$1-$n" type veth peer name "p$n" netns "$1-sw"
    ip -n "$1-sw" link set "p$n" up
    ip -n "$1-$n" link set eth0 up
  done
  ip -n "$1-a" addr add "$2.1/24" dev eth0
  ip -n "$1-b" addr add "$2.2/24" dev eth0
}
