/* Can a port's receive path move between a socket queue and a TPACKET_V2
 * ring while frames arrive, with none lost, none doubled and none
 * reordered? (docs/benchmarks.md, "Lever: a TPACKET_V2 RX ring": the RX
 * slots held only while a port is busy.)
 *
 * One PACKET_FANOUT group in CBPF mode on interface IF: member 0 a plain
 * socket (read with recv), member 1 a socket with a TPACKET_V2 RX ring,
 * joined after it. The group's program says which member gets each frame;
 * replacing it (PACKET_FANOUT_DATA) is the switch. Frames are sent out of
 * IF by a third socket and reach the group through the taps on outgoing
 * frames, each with a sequence number. Phases:
 *   1. program "return 0", N frames:   all to the socket;
 *   2. a thread sends STREAM frames and the program becomes "return 1" while
 *      it does: the socket has the first k in order, the ring the rest in
 *      order, none lost or doubled (one sending CPU, so a frame that saw
 *      the new program is followed only by frames that see it too);
 *   3. program "return 0", N frames:   all to the socket again;
 *   4. the ring member closed, program "return 1", N frames: the kernel
 *      takes the result modulo the members left (one), so all to the
 *      socket.
 * Prints what each member got; exits 0 if every phase went as it should.
 * Needs two CPUs: the stream of phase 2 is sent from CPU 0, the program
 * swapped from CPU 1.
 *   gcc -O2 -pthread -o /tmp/fanout-swap benches/lab/relay-probe/fanout-swap.c
 *   ip netns add fs-probe; ip -n fs-probe link add fsa type veth peer name fsb
 *   ip -n fs-probe link set fsa up; ip -n fs-probe link set fsb up
 *   ip netns exec fs-probe /tmp/fanout-swap fsa; ip netns del fs-probe
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define N 500
#define STREAM 8000 /* phase 2: long enough for the swap to land inside it */
#define SLOTS 16384
#define SLOT 2048
#define ETHERTYPE 0x88b5 /* IEEE local experimental */

static int ifindex;

static void die(const char *what) { perror(what); exit(2); }

static int member(int group, int ring, char **map) {
  /* ETH_P_ALL: only such taps see outgoing frames (dev_queue_xmit_nit). */
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd < 0) die("socket");
  int rcvbuf = 8 << 20; /* room for a phase's frames, as userbridge's sockets have */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf)) die("SO_RCVBUFFORCE");
  if (ring) {
    int v2 = TPACKET_V2;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v2, sizeof v2)) die("PACKET_VERSION");
    struct tpacket_req req = { .tp_block_size = 4096, .tp_block_nr = SLOTS / 2, .tp_frame_size = SLOT, .tp_frame_nr = SLOTS };
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req)) die("PACKET_RX_RING");
    *map = mmap(NULL, (size_t)SLOTS * SLOT, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (*map == MAP_FAILED) die("mmap");
  }
  struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = ifindex };
  if (bind(fd, (struct sockaddr *)&a, sizeof a)) die("bind");
  int fanout = group | (PACKET_FANOUT_CBPF << 16);
  if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof fanout)) die("PACKET_FANOUT");
  return fd;
}

/* The group's program: every frame to member k (modulo the members). */
static void steer(int fd, unsigned k) {
  struct sock_filter code[] = { BPF_STMT(BPF_RET | BPF_K, k) };
  struct sock_fprog prog = { .len = 1, .filter = code };
  if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT_DATA, &prog, sizeof prog)) die("PACKET_FANOUT_DATA");
}

static int tx;
static uint32_t sent; /* frames phase 2's sender has sent so far */

static void send_frames(uint32_t first, uint32_t count) {
  unsigned char f[64] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, ETHERTYPE >> 8, ETHERTYPE & 0xff };
  for (uint32_t s = first; s < first + count; s++) {
    memcpy(f + 14, &s, 4);
    if (send(tx, f, sizeof f, 0) != (ssize_t)sizeof f) die("send");
    __atomic_add_fetch(&sent, 1, __ATOMIC_RELAXED);
  }
}

static void send_phase(uint32_t first) { send_frames(first, N); }

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set)) die("sched_setaffinity");
}

/* Phase 2's stream, from CPU 0 while the main thread, on CPU 1, swaps the
 * program under it. */
static void *sender(void *first) {
  pin(0);
  send_frames((uint32_t)(uintptr_t)first, STREAM);
  return NULL;
}

/* Ours: the probe's ethertype (the interface's own traffic, IPv6 neighbour
 * discovery and the like, reaches the taps too). */
static int ours(const unsigned char *f, size_t len) {
  return len >= 18 && f[12] == ETHERTYPE >> 8 && f[13] == (ETHERTYPE & 0xff);
}

/* Sequence numbers queued on the plain socket, in order. */
static int drain_socket(int fd, uint32_t *out) {
  unsigned char b[2048];
  int n = 0;
  for (ssize_t r; (r = recv(fd, b, sizeof b, 0)) >= 0;)
    if (ours(b, (size_t)r)) memcpy(&out[n++], b + 14, 4);
  return n;
}

/* Sequence numbers in the ring's slots, in slot order from *next. */
static int drain_ring(char *map, unsigned *next, uint32_t *out) {
  int n = 0;
  for (;;) {
    struct tpacket2_hdr *h = (struct tpacket2_hdr *)(map + (size_t)*next * SLOT);
    if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) return n;
    const unsigned char *f = (unsigned char *)h + h->tp_mac;
    if (ours(f, h->tp_snaplen)) memcpy(&out[n++], f + 14, 4);
    __atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    *next = (*next + 1) % SLOTS;
  }
}

/* Exactly first..first+count-1, in order. */
static int run_of(const char *what, const uint32_t *got, int n, uint32_t first, int count) {
  int ok = n == count;
  for (int i = 0; ok && i < n; i++) ok = got[i] == first + (uint32_t)i;
  printf("%-46s %4d frames from %u, %s\n", what, n, first, ok ? "all, in order" : "WRONG");
  return ok;
}

static int exact(const char *what, const uint32_t *got, int n, uint32_t first) { return run_of(what, got, n, first, N); }

int main(int argc, char **argv) {
  if (argc != 2 || !(ifindex = (int)if_nametoindex(argv[1]))) {
    fprintf(stderr, "usage: fanout-swap IF (an interface that is up and yours)\n");
    return 2;
  }
  pin(1);
  int group = getpid() & 0xffff;
  char *map = NULL;
  unsigned next = 0;
  int sock = member(group, 0, NULL), ring = member(group, 1, &map);
  tx = socket(AF_PACKET, SOCK_RAW, 0);
  if (tx < 0) die("socket");
  struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_ifindex = ifindex };
  if (bind(tx, (struct sockaddr *)&a, sizeof a)) die("bind tx");
  static uint32_t got[STREAM], got2[STREAM];
  int ok = 1, n, k;

  steer(sock, 0);
  send_phase(0);
  ok &= exact("1. program 0: the socket", got, drain_socket(sock, got), 0);
  ok &= drain_ring(map, &next, got) == 0;

  pthread_t t;
  __atomic_store_n(&sent, 0, __ATOMIC_RELAXED);
  if (pthread_create(&t, NULL, sender, (void *)(uintptr_t)N)) die("pthread_create");
  while (__atomic_load_n(&sent, __ATOMIC_RELAXED) < STREAM / 4) sched_yield();
  steer(sock, 1);
  pthread_join(t, NULL);
  k = drain_socket(sock, got);
  ok &= k > 0 && k < STREAM; /* the switch fell inside the stream */
  ok &= run_of("2. program 1 mid-stream: the socket, then", got, k, N, k);
  n = drain_ring(map, &next, got2);
  ok &= run_of("   the ring", got2, n, N + (uint32_t)k, STREAM - k);

  steer(ring, 0); /* any member may set the group's program */
  send_phase(N + STREAM);
  ok &= exact("3. program 0 again: the socket", got, drain_socket(sock, got), N + STREAM);
  ok &= drain_ring(map, &next, got) == 0;

  munmap(map, (size_t)SLOTS * SLOT);
  close(ring);
  steer(sock, 1);
  send_phase(2 * N + STREAM);
  n = drain_socket(sock, got);
  ok &= exact("4. ring member closed, program 1: the socket", got, n, 2 * N + STREAM);

  printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
