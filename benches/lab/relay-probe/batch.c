/* The least a userspace switch on AF_PACKET can spend per frame, for
 * throughput: userbridge's reader layout with nothing of userbridge in it.
 * Not part of userbridge: a lower bound for the 64-byte figures of
 * ../shared/lab-bench.sh and benches/lab/pairs.sh (docs/benchmarks.md,
 * "The floor for targets 3 and 4").
 *
 *   batch [-t] [-r] [-p] A1 B1 [A2 B2 ...]
 *
 * Frames from Ai go out of Bi and back; no parsing, no table, no vnet
 * header (so no TCP super-frames: trafgen's UDP only). As userbridge does:
 * every interface is a PACKET_FANOUT group by CPU with one socket per CPU;
 * the reader for CPU c is pinned to c at nice -10 and sleeps in epoll_wait
 * on its sockets; a ready socket is drained with recvmmsg of 32 and each
 * batch sent with one sendmmsg on the reader's socket of the peer
 * interface. With -t each batch goes out through a PACKET_TX_RING on that
 * socket instead (one send() per batch, no msghdr per frame), with
 * PACKET_VNET_HDR both ways and hdr_len set to the frame's length, so the
 * kernel copies each frame whole and a slot is free again once sent.
 * With -r each socket receives into a TPACKET_V2 PACKET_RX_RING (RX_SLOTS
 * slots of RX_SLOT bytes, default 1024 of 2048) instead of recvmmsg: the kernel copies the
 * frame into a slot in its softirq and wakes the reader per frame as for
 * recvmmsg (unlike TPACKET_V3's blocks, which wait for a block timer).
 * With -p the threads are laid out as userbridge's port threads instead
 * (target 1's floor for that layout, "Where a ping's time goes"): one
 * thread per interface at nice -10, unpinned (run it under taskset), with
 * every CPU's member of its interface in its epoll (edge-triggered), each
 * batch sent with sendmmsg on the peer interface's member of the same CPU;
 * -t and -r do not apply to it. The socket options userbridge sets that
 * this probe does not, each on when its variable is set: VNET=1
 * (PACKET_VNET_HDR both ways; without -t and -r), AUX=1 (PACKET_AUXDATA),
 * CBPF=1 (the fanout group picks its member with userbridge's classic BPF
 * program, TCP by flow hash, the rest by CPU, instead of PACKET_FANOUT_CPU).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#ifndef PACKET_FANOUT_FLAG_IGNORE_OUTGOING
#define PACKET_FANOUT_FLAG_IGNORE_OUTGOING 0x4000
#endif

#define BATCH 32
#define SLOT 2048
#define MAX_IFS 64

#define RING_FRAMES 256
#define VNET 10 /* struct virtio_net_hdr */

static int n_ifs, n_cpus, tx_ring, rx_ring, per_port, rx_slots = 1024, rx_slot = SLOT;
static int ifindex[MAX_IFS];

static int open_member(int i, int fanout_id) {
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd < 0) { perror("socket"); exit(1); }
  int one = 1;
  /* Frames a reader sends out of this interface are not ours to relay. */
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) { perror("PACKET_IGNORE_OUTGOING"); exit(1); }
  struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = ifindex[i] };
  if (tx_ring || rx_ring) {
    int v2 = TPACKET_V2;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v2, sizeof v2) < 0) { perror("PACKET_VERSION"); exit(1); }
  }
  /* Before any ring: the kernel refuses PACKET_VNET_HDR once one is set. */
  if (tx_ring && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) { perror("PACKET_VNET_HDR"); exit(1); }
  if (rx_ring) {
    struct tpacket_req req = { .tp_block_size = 4096, .tp_block_nr = (unsigned)(rx_slots / (4096 / rx_slot)), .tp_frame_size = (unsigned)rx_slot, .tp_frame_nr = (unsigned)rx_slots };
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0) { perror("PACKET_RX_RING"); exit(1); }
  }
  if (tx_ring) {
    struct tpacket_req req = { .tp_block_size = 4096, .tp_block_nr = RING_FRAMES / 2, .tp_frame_size = SLOT, .tp_frame_nr = RING_FRAMES };
    if (setsockopt(fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof req) < 0) { perror("PACKET_TX_RING"); exit(1); }
  }
  if (getenv("VNET") && !tx_ring && !rx_ring && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) { perror("PACKET_VNET_HDR"); exit(1); }
  if (getenv("AUX") && setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) < 0) { perror("PACKET_AUXDATA"); exit(1); }
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
  /* As userbridge's: room for a burst while the reader is off the CPU. */
  int rcvbuf = 8 << 20, sndbuf = 4 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) { perror("SO_RCVBUFFORCE"); exit(1); }
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0) { perror("SO_SNDBUFFORCE"); exit(1); }
  /* A group has its own hook: the member's PACKET_IGNORE_OUTGOING does not
   * apply to it, the group's flag (Linux 6.2) does. */
  int cbpf = getenv("CBPF") != NULL;
  int fanout = fanout_id | (((cbpf ? PACKET_FANOUT_CBPF : PACKET_FANOUT_CPU) | PACKET_FANOUT_FLAG_IGNORE_OUTGOING) << 16);
  if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof fanout) < 0) { perror("PACKET_FANOUT"); exit(1); }
  if (cbpf) {
    /* userbridge's program (crates/port/src/sys/socket.rs, fanout_program):
     * TCP over IPv4 or IPv6 by its flow hash when it has one, the rest by CPU. */
    struct sock_filter prog[] = {
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, (unsigned)(SKF_AD_OFF + SKF_AD_PROTOCOL)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x0800, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x86dd, 3, 0),
      BPF_STMT(BPF_JMP | BPF_JA, 7),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
      BPF_STMT(BPF_JMP | BPF_JA, 1),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (unsigned)(SKF_AD_OFF + SKF_AD_RXHASH)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
      BPF_STMT(BPF_JMP | BPF_JA, 1),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (unsigned)(SKF_AD_OFF + SKF_AD_CPU)),
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (unsigned)n_cpus),
      BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, 0),
      BPF_STMT(BPF_RET | BPF_A, 0),
    };
    struct sock_fprog fp = { sizeof prog / sizeof prog[0], prog };
    if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT_DATA, &fp, sizeof fp) < 0) { perror("PACKET_FANOUT_DATA"); exit(1); }
  }
  return fd;
}

struct reader { int cpu; int *fd; /* one per interface */ char **ring; unsigned *next; char **rx; unsigned *rx_next; };

/* Puts a received frame (vnet header first) in the next TX ring slot;
 * false when that slot is still being sent. */
static int ring_put(char *ring, unsigned *next, const char *frame, unsigned len) {
  struct tpacket2_hdr *h = (struct tpacket2_hdr *)(ring + (size_t)*next * SLOT);
  if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE) return 0;
  char *data = (char *)h + TPACKET2_HDRLEN - sizeof(struct sockaddr_ll);
  memcpy(data, frame, len);
  unsigned short whole = (unsigned short)(len - VNET); /* hdr_len: copy the frame whole */
  memcpy(data + 2, &whole, 2);
  h->tp_len = len;
  __atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
  *next = (*next + 1) % RING_FRAMES;
  return 1;
}

/* Relays what the RX ring of interface i holds, a batch of at most 32 at a
 * time; a slot goes back to the kernel once its frame has been sent. */
static void relay_ring(struct reader *r, int i, int peer, struct mmsghdr *out, struct iovec *oiov) {
  int vnet = tx_ring ? VNET : 0; /* the vnet header sits just before the frame */
  for (;;) {
    struct tpacket2_hdr *slot[BATCH];
    int got = 0;
    while (got < BATCH) {
      struct tpacket2_hdr *h = (struct tpacket2_hdr *)(r->rx[i] + (size_t)r->rx_next[i] * (size_t)rx_slot);
      if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) break;
      slot[got++] = h;
      r->rx_next[i] = (r->rx_next[i] + 1) % (unsigned)rx_slots;
    }
    if (!got) return;
    if (tx_ring) {
      for (int k = 0; k < got; k++) {
        const char *f = (const char *)slot[k] + slot[k]->tp_mac - vnet;
        unsigned len = slot[k]->tp_snaplen + (unsigned)vnet;
        if (!ring_put(r->ring[peer], &r->next[peer], f, len)) {
          send(r->fd[peer], NULL, 0, MSG_DONTWAIT);
          ring_put(r->ring[peer], &r->next[peer], f, len); /* full: drop */
        }
      }
      send(r->fd[peer], NULL, 0, MSG_DONTWAIT);
    } else {
      for (int k = 0; k < got; k++) {
        oiov[k] = (struct iovec){ (char *)slot[k] + slot[k]->tp_mac, slot[k]->tp_snaplen };
        memset(&out[k], 0, sizeof out[k]);
        out[k].msg_hdr.msg_iov = &oiov[k];
        out[k].msg_hdr.msg_iovlen = 1;
      }
      for (int sent = 0; sent < got;) {
        int s = sendmmsg(r->fd[peer], out + sent, (unsigned)(got - sent), 0);
        if (s <= 0) break;
        sent += s;
      }
    }
    for (int k = 0; k < got; k++) __atomic_store_n(&slot[k]->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    if (got < BATCH) return;
  }
}

/* A reader's recvmmsg and sendmmsg headers over its own BATCH buffers. */
struct mmsg {
  char (*buf)[SLOT];
  struct iovec iov[BATCH], oiov[BATCH];
  struct mmsghdr in[BATCH], out[BATCH];
};

static void mmsg_init(struct mmsg *m, char (*buf)[SLOT]) {
  memset(m, 0, sizeof *m);
  m->buf = buf;
  for (int k = 0; k < BATCH; k++) {
    m->iov[k] = (struct iovec){ buf[k], SLOT };
    m->in[k].msg_hdr.msg_iov = &m->iov[k];
    m->in[k].msg_hdr.msg_iovlen = 1;
  }
}

/* Sends the `got` frames the last recvmmsg took through `to` with sendmmsg
 * (a full peer drops the rest, as a switch does). */
static void mmsg_send(struct mmsg *m, int to, int got) {
  for (int k = 0; k < got; k++) {
    m->oiov[k] = (struct iovec){ m->buf[k], m->in[k].msg_len };
    memset(&m->out[k], 0, sizeof m->out[k]);
    m->out[k].msg_hdr.msg_iov = &m->oiov[k];
    m->out[k].msg_hdr.msg_iovlen = 1;
  }
  for (int sent = 0; sent < got;) {
    int s = sendmmsg(to, m->out + sent, (unsigned)(got - sent), 0);
    if (s <= 0) break;
    sent += s;
  }
}

static void *run(void *arg) {
  struct reader *r = arg;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(r->cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) < 0) { perror("sched_setaffinity"); exit(1); }
  if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), -10) < 0) { perror("setpriority"); exit(1); }
  int ep = epoll_create1(0);
  for (int i = 0; i < n_ifs; i++) {
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, r->fd[i], &ev) < 0) { perror("epoll_ctl"); exit(1); }
  }
  static __thread char buf[BATCH][SLOT];
  static __thread struct mmsg m;
  mmsg_init(&m, buf);
  for (;;) {
    struct epoll_event evs[MAX_IFS];
    int n = epoll_wait(ep, evs, MAX_IFS, -1);
    if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); exit(1); }
    for (int e = 0; e < n; e++) {
      int i = (int)evs[e].data.u32, peer = i ^ 1;
      if (rx_ring) {
        relay_ring(r, i, peer, m.out, m.oiov);
        continue;
      }
      for (;;) {
        int got = recvmmsg(r->fd[i], m.in, BATCH, MSG_DONTWAIT, NULL);
        if (got <= 0) break;
        if (tx_ring) {
          for (int k = 0; k < got; k++)
            if (!ring_put(r->ring[peer], &r->next[peer], buf[k], m.in[k].msg_len)) {
              send(r->fd[peer], NULL, 0, MSG_DONTWAIT);
              if (!ring_put(r->ring[peer], &r->next[peer], buf[k], m.in[k].msg_len)) break; /* full: drop */
            }
          send(r->fd[peer], NULL, 0, MSG_DONTWAIT);
        } else {
          mmsg_send(&m, r->fd[peer], got);
        }
        if (got < BATCH) break; /* the socket is empty */
      }
    }
  }
  return NULL;
}

struct port_reader { int i; struct reader *rs; };

static void *run_port(void *arg) {
  struct port_reader *p = arg;
  int i = p->i, peer = i ^ 1;
  if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), -10) < 0) { perror("setpriority"); exit(1); }
  int ep = epoll_create1(0);
  for (int c = 0; c < n_cpus; c++) {
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)c };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, p->rs[c].fd[i], &ev) < 0) { perror("epoll_ctl"); exit(1); }
  }
  static __thread char buf[BATCH][SLOT];
  static __thread struct mmsg m;
  mmsg_init(&m, buf);
  for (;;) {
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, -1);
    if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); exit(1); }
    for (int e = 0; e < n; e++) {
      int c = (int)evs[e].data.u32;
      for (;;) {
        int got = recvmmsg(p->rs[c].fd[i], m.in, BATCH, MSG_DONTWAIT, NULL);
        if (got <= 0) break;
        mmsg_send(&m, p->rs[c].fd[peer], got);
        if (got < BATCH) break;
      }
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  for (; argc > 1 && argv[1][0] == '-'; argv++, argc--) {
    if (!strcmp(argv[1], "-t")) tx_ring = 1;
    else if (!strcmp(argv[1], "-r")) rx_ring = 1;
    else if (!strcmp(argv[1], "-p")) per_port = 1;
    else { fprintf(stderr, "batch: unknown option %s\n", argv[1]); return 2; }
  }
  if (getenv("RX_SLOTS")) rx_slots = atoi(getenv("RX_SLOTS"));
  if (getenv("RX_SLOT")) rx_slot = atoi(getenv("RX_SLOT"));
  if (rx_slot < 128 || rx_slot > 4096 || 4096 % rx_slot) { fprintf(stderr, "batch: RX_SLOT must divide 4096, at least 128\n"); return 2; }
  if (rx_slots < 4096 / rx_slot || rx_slots % (4096 / rx_slot)) { fprintf(stderr, "batch: RX_SLOTS must be a multiple of 4096 / RX_SLOT\n"); return 2; }
  n_ifs = argc - 1;
  if (n_ifs < 2 || n_ifs % 2 || n_ifs > MAX_IFS) {
    fprintf(stderr, "usage: batch [-t] [-r] [-p] A1 B1 [A2 B2 ...] (pairs of interfaces, at most %d)\n", MAX_IFS);
    return 2;
  }
  for (int i = 0; i < n_ifs; i++) {
    ifindex[i] = (int)if_nametoindex(argv[i + 1]);
    if (!ifindex[i]) { fprintf(stderr, "batch: no interface %s\n", argv[i + 1]); return 1; }
  }
  n_cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
  struct reader *rs = calloc((size_t)n_cpus, sizeof *rs);
  for (int c = 0; c < n_cpus; c++) {
    rs[c].cpu = c;
    rs[c].fd = calloc((size_t)n_ifs, sizeof(int));
    rs[c].ring = calloc((size_t)n_ifs, sizeof(char *));
    rs[c].next = calloc((size_t)n_ifs, sizeof(unsigned));
    rs[c].rx = calloc((size_t)n_ifs, sizeof(char *));
    rs[c].rx_next = calloc((size_t)n_ifs, sizeof(unsigned));
  }
  /* Every CPU's socket joins the interface's group before any reader runs. */
  for (int i = 0; i < n_ifs; i++)
    for (int c = 0; c < n_cpus; c++) {
      rs[c].fd[i] = open_member(i, (getpid() + i) & 0xffff);
      /* One mapping: the RX ring first, then the TX ring. */
      size_t rx_len = rx_ring ? (size_t)rx_slots * (size_t)rx_slot : 0, tx_len = tx_ring ? (size_t)RING_FRAMES * SLOT : 0;
      if (rx_len + tx_len) {
        char *m = mmap(NULL, rx_len + tx_len, PROT_READ | PROT_WRITE, MAP_SHARED, rs[c].fd[i], 0);
        if (m == MAP_FAILED) { perror("mmap"); exit(1); }
        rs[c].rx[i] = m;
        rs[c].ring[i] = m + rx_len;
      }
    }
  pthread_t t;
  if (per_port) {
    /* As userbridge's port threads: one per interface, all its CPUs'
     * members in its epoll, sending on the peer's member of the same CPU;
     * no pinning (run it under taskset), nice -10. */
    struct port_reader *ps = calloc((size_t)n_ifs, sizeof *ps);
    for (int i = 0; i < n_ifs; i++) {
      ps[i] = (struct port_reader){ i, rs };
      if (i) pthread_create(&t, NULL, run_port, &ps[i]);
    }
    run_port(&ps[0]);
  }
  for (int c = 1; c < n_cpus; c++) pthread_create(&t, NULL, run, &rs[c]);
  run(&rs[0]);
}
