// A measurement probe, not part of userbridge: how fast could an AF_XDP
// datapath on veth ports be? Two ports, p1 <-> p2, no FDB, no checks: an
// upper bound. Generic XDP (or native with --drv) on each host veth; on the
// port's single queue, one XSK per CPU sharing one UMEM; steer.bpf.c sends
// each frame to the XSK of the CPU it arrived on; reader (port, cpu) is
// pinned to that CPU at nice -10: the layout of userbridge's AF_PACKET
// readers. Copy mode both ways (veth has no zero-copy). See README.md.
#define _GNU_SOURCE
#include <xdp/xsk.h>
#include <xdp/libxdp.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <linux/if_link.h>
#include <pthread.h>
#include <sched.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <net/if.h>
#define NCPU 2 /* the lab machine's CPUs; frames on other CPUs find no XSK */
#define NF 16384
#define FS 2048
#define RXF (NF/2)
#define B 64
#define RING 4096
struct port { const char *name; int ifindex; void *area; struct xsk_umem *umem;
  struct xsk_ring_prod fq; struct xsk_ring_cons cq; pthread_mutex_t mu;
  unsigned long long txfree[NF]; int nfree;
  struct xsk_socket *xsk[NCPU]; struct xsk_ring_cons rx[NCPU]; struct xsk_ring_prod tx[NCPU]; int fd[NCPU];
  unsigned long rx_n[NCPU], tx_n, drop; };
static struct port P[2];
static volatile int stop;
static int xdp_mode = XDP_FLAGS_SKB_MODE;
static void die(const char *m, int e) { fprintf(stderr, "%s: %s\n", m, strerror(e)); exit(1); }
static void setup(struct port *p, const char *obj) {
  p->ifindex = if_nametoindex(p->name); if (!p->ifindex) die(p->name, errno);
  pthread_mutex_init(&p->mu, NULL);
  p->area = mmap(NULL, (size_t)NF*FS, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_POPULATE, -1, 0);
  struct xsk_umem_config uc = { .fill_size = RXF, .comp_size = RING*2, .frame_size = FS, .frame_headroom = 0 };
  int e = xsk_umem__create(&p->umem, p->area, (size_t)NF*FS, &p->fq, &p->cq, &uc); if (e) die("umem", -e);
  struct bpf_object *o = bpf_object__open_file(obj, NULL); if (!o) die("open obj", errno);
  if ((e = bpf_object__load(o))) die("load", -e);
  struct bpf_program *prog = bpf_object__find_program_by_name(o, "cpu_xsk");
  int mapfd = bpf_object__find_map_fd_by_name(o, "xsks");
  for (int c = 0; c < NCPU; c++) {
    struct xsk_socket_config sc = { .rx_size = RING, .tx_size = RING, .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD, .xdp_flags = xdp_mode, .bind_flags = XDP_COPY };
    e = xsk_socket__create_shared(&p->xsk[c], p->name, 0, p->umem, &p->rx[c], &p->tx[c], &p->fq, &p->cq, &sc); if (e) die("xsk", -e);
    p->fd[c] = xsk_socket__fd(p->xsk[c]);
    if ((e = bpf_map_update_elem(mapfd, &c, &p->fd[c], 0))) die("map", errno);
  }
  if ((e = bpf_xdp_attach(p->ifindex, bpf_program__fd(prog), xdp_mode, NULL))) die("attach", -e);
  __u32 idx; if (xsk_ring_prod__reserve(&p->fq, RXF, &idx) != RXF) die("fq", 0);
  for (int i = 0; i < RXF; i++) *xsk_ring_prod__fill_addr(&p->fq, idx+i) = (unsigned long long)i*FS;
  xsk_ring_prod__submit(&p->fq, RXF);
  p->nfree = 0; for (int i = RXF; i < NF; i++) p->txfree[p->nfree++] = (unsigned long long)i*FS;
}
static void *run(void *arg) {
  long id = (long)arg; int pi = id / NCPU, c = id % NCPU;
  struct port *a = &P[pi], *b = &P[1-pi];
  cpu_set_t s; CPU_ZERO(&s); CPU_SET(c, &s); pthread_setaffinity_np(pthread_self(), sizeof s, &s);
  setpriority(PRIO_PROCESS, syscall(SYS_gettid), -10);
  struct pollfd pf = { .fd = a->fd[c], .events = POLLIN };
  unsigned long long got[B];
  while (!stop) {
    __u32 ri; unsigned n = xsk_ring_cons__peek(&a->rx[c], B, &ri);
    if (!n) { poll(&pf, 1, 200); continue; }
    pthread_mutex_lock(&b->mu);
    __u32 ci; unsigned k = xsk_ring_cons__peek(&b->cq, RING, &ci);
    for (unsigned i = 0; i < k; i++) b->txfree[b->nfree++] = *xsk_ring_cons__comp_addr(&b->cq, ci+i);
    xsk_ring_cons__release(&b->cq, k);
    unsigned m = n < (unsigned)b->nfree ? n : (unsigned)b->nfree;
    for (unsigned i = 0; i < m; i++) got[i] = b->txfree[--b->nfree];
    pthread_mutex_unlock(&b->mu);
    __u32 ti = 0;
    if (m && xsk_ring_prod__reserve(&b->tx[c], m, &ti) != m) { pthread_mutex_lock(&b->mu); for (unsigned i = 0; i < m; i++) b->txfree[b->nfree++] = got[i]; pthread_mutex_unlock(&b->mu); m = 0; }
    for (unsigned i = 0; i < m; i++) {
      const struct xdp_desc *d = xsk_ring_cons__rx_desc(&a->rx[c], ri+i);
      memcpy((char*)b->area + got[i], (char*)a->area + d->addr, d->len);
      struct xdp_desc *t = xsk_ring_prod__tx_desc(&b->tx[c], ti+i); t->addr = got[i]; t->len = d->len; t->options = 0;
    }
    if (m) { xsk_ring_prod__submit(&b->tx[c], m);
      for (int r = 0; r < 8; r++) { if (sendto(b->fd[c], NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0) break; if (errno != EAGAIN && errno != EBUSY) break; } }
    __atomic_add_fetch(&a->drop, n - m, __ATOMIC_RELAXED); a->rx_n[c] += n; __atomic_add_fetch(&b->tx_n, m, __ATOMIC_RELAXED);
    pthread_mutex_lock(&a->mu);
    /* The fill ring holds RXF entries and only frames taken from it come back: it always has room. */
    __u32 fi; if (xsk_ring_prod__reserve(&a->fq, n, &fi) != n) die("fill ring full", 0);
    for (unsigned i = 0; i < n; i++) *xsk_ring_prod__fill_addr(&a->fq, fi+i) = xsk_ring_cons__rx_desc(&a->rx[c], ri+i)->addr;
    xsk_ring_prod__submit(&a->fq, n);
    pthread_mutex_unlock(&a->mu);
    xsk_ring_cons__release(&a->rx[c], n);
  }
  return NULL;
}
static void onsig(int s) { (void)s; stop = 1; }
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: afxdp-probe STEER.o IF1 IF2 [--drv]\n"); return 2; }
  if (argc > 4 && !strcmp(argv[4], "--drv")) xdp_mode = XDP_FLAGS_DRV_MODE;
  libbpf_set_print(NULL);
  P[0].name = argv[2]; P[1].name = argv[3]; setup(&P[0], argv[1]); setup(&P[1], argv[1]);
  signal(SIGTERM, onsig); signal(SIGINT, onsig);
  pthread_t t[2*NCPU]; for (long i = 0; i < 2*NCPU; i++) pthread_create(&t[i], NULL, run, (void*)i);
  fprintf(stderr, "afxdp-probe: running\n");
  while (!stop) pause();
  for (int i = 0; i < 2*NCPU; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < 2; i++) fprintf(stderr, "port %d rx %lu+%lu tx %lu drop %lu\n", i, P[i].rx_n[0], P[i].rx_n[1], P[i].tx_n, P[i].drop);
  for (int i = 0; i < 2; i++) bpf_xdp_detach(P[i].ifindex, xdp_mode, NULL);
  return 0;
}
