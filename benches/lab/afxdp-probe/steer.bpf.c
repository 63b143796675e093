// XDP program for afxdp-probe.c: each frame to the XSK of the CPU it arrived on;
// a CPU with no XSK in the map passes the frame to the stack (XDP_PASS).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_XSKMAP); __uint(max_entries, 64); __type(key, int); __type(value, int); } xsks SEC(".maps");
SEC("xdp") int cpu_xsk(struct xdp_md *ctx) { return bpf_redirect_map(&xsks, bpf_get_smp_processor_id(), XDP_PASS); }
char _license[] SEC("license") = "GPL";
