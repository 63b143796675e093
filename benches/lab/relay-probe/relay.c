/* The least a userspace switch on AF_PACKET can do per frame, for latency:
 * relay every frame between two interfaces, no parsing, no table, no batch.
 * Not part of userbridge: a lower bound for benches/lab/ping.sh
 * (docs/benchmarks.md, "Where a ping's time goes").
 *   relay threads IF1 IF2   one thread per interface: blocking recv, send
 *   relay poll IF1 IF2      one thread for both: poll, recv, send
 *   relay spin IF1 IF2      one thread for both, never sleeping (MSG_DONTWAIT)
 */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

static int open_port(const char *name) {
  int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
  if (fd < 0) { perror("socket"); exit(1); }
  int one = 1;
  /* Frames the other socket sends out of this interface are not ours to relay. */
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) { perror("PACKET_IGNORE_OUTGOING"); exit(1); }
  struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = (int)if_nametoindex(name) };
  if (a.sll_ifindex == 0) { fprintf(stderr, "relay: no interface %s\n", name); exit(1); }
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
  return fd;
}

struct dir { int from, to; };
static char bufs[2][65536];

static void relay_one(int from, int to, char *buf, int flags) {
  ssize_t n = recv(from, buf, 65536, flags);
  if (n > 0) send(to, buf, (size_t)n, 0);
}

static void *one_way(void *arg) {
  struct dir *d = arg;
  char *buf = malloc(65536);
  for (;;) relay_one(d->from, d->to, buf, 0);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: relay threads|poll|spin IF1 IF2\n"); return 2; }
  int a = open_port(argv[2]), b = open_port(argv[3]);
  if (!strcmp(argv[1], "threads")) {
    static struct dir ab, ba;
    ab = (struct dir){ a, b }; ba = (struct dir){ b, a };
    pthread_t t;
    pthread_create(&t, NULL, one_way, &ab);
    one_way(&ba);
  } else if (!strcmp(argv[1], "poll")) {
    struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
    for (;;) {
      if (poll(p, 2, -1) < 0) { perror("poll"); return 1; }
      if (p[0].revents & POLLIN) relay_one(a, b, bufs[0], MSG_DONTWAIT);
      if (p[1].revents & POLLIN) relay_one(b, a, bufs[1], MSG_DONTWAIT);
    }
  } else if (!strcmp(argv[1], "spin")) {
    for (;;) {
      relay_one(a, b, bufs[0], MSG_DONTWAIT);
      relay_one(b, a, bufs[1], MSG_DONTWAIT);
    }
  } else {
    fprintf(stderr, "relay: mode is threads, poll or spin\n");
    return 2;
  }
}
