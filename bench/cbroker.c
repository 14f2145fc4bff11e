/* cbroker: the benchmark's C reference, a minimal single-threaded epoll line server on 127.0.0.1.
 *
 *   cbroker ack PORT     greets each connection with "connect\n" and answers every complete line
 *                        with "Information Received\n" (sockservice --mode greet, default options)
 *   cbroker relay PORT   sends every complete line, as received, to every other connection
 *                        (sockservice --mode relay)
 *
 * It does only what those two need, so its rates are close to what one core can do on this machine:
 * bench/run.py prints sockservice's figures as ratios to it. Bounds: at most MAXFD descriptors and
 * LINE_MAX bytes buffered per connection (a connection that sends more without a line feed is closed);
 * a write that would block waits for that one peer (the load generators always read). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 4096
#define LINE_MAX 65536

static const char GREETING[] = "connect\n";
static const char ACK[] = "Information Received\n";

struct connection {
  int open;
  size_t used;
  char *buffer;
};

static struct connection conns[MAXFD];

/* Write all of data to fd, waiting for it to drain when its send buffer is full; 0 on success. */
static int writeAll(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t written = write(fd, data, length);
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return -1;
      struct pollfd wait = {.fd = fd, .events = POLLOUT};
      poll(&wait, 1, -1);
      continue;
    }
    data += written;
    length -= (size_t)written;
  }
  return 0;
}

static void closeConnection(int fd) {
  close(fd);
  free(conns[fd].buffer);
  conns[fd] = (struct connection){0};
}

static void accepted(int epoll, int fd, int relay) {
  int one = 1;
  if (fd >= MAXFD) { close(fd); return; }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, O_NONBLOCK);
  conns[fd] = (struct connection){.open = 1, .used = 0, .buffer = malloc(LINE_MAX)};
  if (!conns[fd].buffer) { close(fd); conns[fd].open = 0; return; }
  struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
  epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
  if (!relay && writeAll(fd, GREETING, sizeof GREETING - 1)) closeConnection(fd);
}

/* Answer (ack) or pass on (relay) the complete lines at the start of fd's buffer. */
static void lines(int fd, int relay) {
  static char acks[LINE_MAX * (sizeof ACK - 1)];
  struct connection *c = &conns[fd];
  char *end = memrchr(c->buffer, '\n', c->used);
  if (!end) {
    if (c->used == LINE_MAX) closeConnection(fd);
    return;
  }
  size_t length = (size_t)(end - c->buffer) + 1;
  if (relay) {
    for (int other = 0; other < MAXFD; other++)
      if (conns[other].open && other != fd && writeAll(other, c->buffer, length))
        closeConnection(other);
  } else {
    size_t count = 0;
    for (char *p = c->buffer; (p = memchr(p, '\n', (size_t)(end + 1 - p))); p++)
      memcpy(acks + count++ * (sizeof ACK - 1), ACK, sizeof ACK - 1);
    if (writeAll(fd, acks, count * (sizeof ACK - 1))) { closeConnection(fd); return; }
  }
  memmove(c->buffer, c->buffer + length, c->used - length);
  c->used -= length;
}

int main(int argc, char **argv) {
  int relay = argc == 3 && strcmp(argv[1], "relay") == 0;
  char *rest = "";
  long port = argc == 3 ? strtol(argv[2], &rest, 10) : -1;
  if ((!relay && (argc != 3 || strcmp(argv[1], "ack") != 0)) || *rest || port < 1 || port > 65535) {
    fprintf(stderr, "usage: cbroker ack|relay PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 1024)) {
    perror("cbroker: bind");
    return 1;
  }
  int epoll = epoll_create1(0);
  struct epoll_event event = {.events = EPOLLIN, .data.fd = listener};
  epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &event);
  struct epoll_event ready[256];
  for (;;) {
    int count = epoll_wait(epoll, ready, 256, -1);
    for (int k = 0; k < count; k++) {
      int fd = ready[k].data.fd;
      if (fd == listener) {
        int client = accept(listener, NULL, NULL);
        if (client >= 0) accepted(epoll, client, relay);
        continue;
      }
      if (!conns[fd].open) continue;
      struct connection *c = &conns[fd];
      ssize_t got = read(fd, c->buffer + c->used, LINE_MAX - c->used);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (got <= 0) { closeConnection(fd); continue; }
      c->used += (size_t)got;
      lines(fd, relay);
    }
  }
}
