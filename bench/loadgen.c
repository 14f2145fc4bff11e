/* sockservice's own load generator, which bench/run.py builds (gcc -O2) and
 * uses when no loadgen.c is given to it. One thread, epoll, loopback TCP.
 *
 *   loadgen ack   HOST PORT [-c CONNS] [-d SECS] [-p IN_FLIGHT] [-g GREETING_LINES] [-m MSG]
 *       every connection skips its greeting, then keeps IN_FLIGHT lines "MSG\n" in
 *       flight: each reply line sends the next one.
 *   loadgen churn HOST PORT [-c CONNS] [-d SECS] [-g GREETING_LINES] [-m MSG]
 *       CONNS at a time: connect, skip the greeting, send "MSG\n", take one reply line
 *       (or the server's close), reset the connection, start over.
 *   loadgen relay HOST PORT [-c CONNS] [-s SENDERS] [-w WINDOW] [-d SECS] [-g GREETING_LINES]
 *       the first SENDERS connections send "#m:SENDER:SEQ\n", each with at most WINDOW
 *       messages not yet received by every other connection; every line received is
 *       checked: an echo (a sender's own message) or a message out of order is counted.
 *
 * Prints one line of key=value pairs: the count, rate (per second), p50_us and p99_us
 * (reply, cycle or fan-out latency), and in relay echoes and bad. Prints error=... and
 * exits 1 when a connection is refused or closed, or nothing happens for 3 s.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define INBUF 65536
#define OUTBUF 65536
#define MAX_LATENCY_US 4000000

enum mode { ACK, CHURN, RELAY };

struct peer {
    int fd;
    char in[INBUF];
    int inlen;
    char out[OUTBUF];
    int outlen;
    int greetingLeft;
    double started;      /* churn: when this connection was opened */
    double *sentAt;      /* ack: send times of the lines in flight, a ring */
    int oldest, inFlight;
    long nextSeq, firstUndelivered; /* relay sender */
    int *receivedBy;     /* relay sender, per window slot: receivers that got it */
    double *sentTime;    /* relay sender, per window slot */
    long *expected;      /* relay: the next sequence number expected from each sender */
};

static enum mode mode;
static int conns = 50, inFlight = 1, greeting = 0, senders = 10, window = 16;
static double duration = 5;
static const char *message = "SOME DATA";
static struct sockaddr_in server;
static struct peer *peers;
static int epfd;
static long done, echoes, bad, progress;
static unsigned *histogram;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void fail(const char *what, int index) {
    printf("error=%s conn=%d done=%ld\n", what, index, done);
    exit(1);
}

static void record(double seconds) {
    long us = (long)(seconds * 1e6);
    histogram[us < 0 ? 0 : us >= MAX_LATENCY_US ? MAX_LATENCY_US - 1 : us]++;
}

static long percentile(double fraction) {
    long total = 0, seen = 0;
    for (long us = 0; us < MAX_LATENCY_US; us++) total += histogram[us];
    for (long us = 0; us < MAX_LATENCY_US; us++) {
        seen += histogram[us];
        if (total && seen >= fraction * total) return us;
    }
    return 0;
}

static void queue(struct peer *p, const char *data, int n) {
    if (p->outlen + n > OUTBUF) fail("output-overflow", (int)(p - peers));
    memcpy(p->out + p->outlen, data, n);
    p->outlen += n;
}

/* Send everything queued. The lines in flight are few and short, so a
 * server that takes none of them for 3 s is stuck. */
static void flush(struct peer *p) {
    int sent = 0;
    double since = 0;
    while (sent < p->outlen) {
        ssize_t n = send(p->fd, p->out + sent, p->outlen - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) fail("send", (int)(p - peers));
            if (!since) since = now();
            else if (now() - since > 3) fail("send-stalled", (int)(p - peers));
            usleep(10);
            continue;
        }
        sent += n;
    }
    p->outlen = 0;
}

static void sendMessage(struct peer *p) {
    char line[512];
    int n = snprintf(line, sizeof line, "%s\n", message);
    queue(p, line, n);
}

static void relaySend(struct peer *p, int index) {
    while (p->nextSeq - p->firstUndelivered < window) {
        char line[64];
        int n = snprintf(line, sizeof line, "#m:%d:%ld\n", index, p->nextSeq);
        p->receivedBy[p->nextSeq % window] = 0;
        p->sentTime[p->nextSeq % window] = now();
        p->nextSeq++;
        queue(p, line, n);
    }
}

static void openPeer(int index) {
    struct peer *p = &peers[index];
    p->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (p->fd < 0) fail("socket", index);
    int one = 1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    p->started = now();
    if (connect(p->fd, (struct sockaddr *)&server, sizeof server) < 0) fail("connect", index);
    if (fcntl(p->fd, F_SETFL, O_NONBLOCK) < 0) fail("fcntl", index);
    p->inlen = 0;
    p->outlen = 0;
    p->greetingLeft = greeting;
    struct epoll_event event = {.events = EPOLLIN, .data.u32 = index};
    epoll_ctl(epfd, EPOLL_CTL_ADD, p->fd, &event);
    if (greeting == 0 && mode == CHURN) {
        sendMessage(p);
        flush(p);
    }
}

static void resetPeer(int index) {
    struct linger reset = {1, 0};
    setsockopt(peers[index].fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    close(peers[index].fd);
    openPeer(index);
}

/* The greeting is over for peer p: start its traffic. */
static void begin(struct peer *p, int index) {
    if (mode == ACK) {
        for (int i = 0; i < inFlight; i++) {
            p->sentAt[(p->oldest + p->inFlight) % inFlight] = now();
            p->inFlight++;
            sendMessage(p);
        }
    } else if (mode == CHURN) {
        sendMessage(p);
    } else if (index < senders) {
        relaySend(p, index);
    }
}

static void relayLine(struct peer *p, int index, const char *line) {
    int sender;
    long seq;
    if (sscanf(line, "#m:%d:%ld", &sender, &seq) != 2 || sender < 0 || sender >= senders) {
        bad++;
        return;
    }
    if (sender == index) {
        echoes++;
        return;
    }
    if (seq != p->expected[sender]) bad++;
    p->expected[sender] = seq + 1;
    done++;
    progress++;
    struct peer *from = &peers[sender];
    if (seq < from->firstUndelivered || seq >= from->nextSeq) return;
    if (++from->receivedBy[seq % window] == conns - 1) {
        record(now() - from->sentTime[seq % window]);
        while (from->firstUndelivered < from->nextSeq
               && from->receivedBy[from->firstUndelivered % window] == conns - 1)
            from->firstUndelivered++;
        relaySend(from, sender);
        flush(from);
    }
}

/* Handle one complete line (without its LF) from peer index; return 1 if
 * the peer was replaced by a new connection. */
static int lineReceived(int index, const char *line) {
    struct peer *p = &peers[index];
    if (p->greetingLeft > 0) {
        if (--p->greetingLeft == 0) begin(p, index);
        return 0;
    }
    if (mode == ACK) {
        if (p->inFlight == 0) {
            bad++;
            return 0;
        }
        record(now() - p->sentAt[p->oldest]);
        p->oldest = (p->oldest + 1) % inFlight;
        p->inFlight--;
        done++;
        progress++;
        p->sentAt[(p->oldest + p->inFlight) % inFlight] = now();
        p->inFlight++;
        sendMessage(p);
        return 0;
    }
    if (mode == CHURN) {
        record(now() - p->started);
        done++;
        progress++;
        resetPeer(index);
        return 1;
    }
    relayLine(p, index, line);
    return 0;
}

static void readable(int index) {
    struct peer *p = &peers[index];
    ssize_t n = recv(p->fd, p->in + p->inlen, INBUF - p->inlen, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        fail("recv", index);
    }
    if (n == 0) {
        if (mode == CHURN && p->greetingLeft == 0) { /* closed instead of a reply */
            record(now() - p->started);
            done++;
            progress++;
            resetPeer(index);
            return;
        }
        fail("closed", index);
    }
    p->inlen += n;
    int start = 0;
    for (int i = 0; i < p->inlen; i++) {
        if (p->in[i] != '\n') continue;
        p->in[i] = '\0';
        if (lineReceived(index, p->in + start)) return;
        start = i + 1;
    }
    if (start == 0 && p->inlen == INBUF) fail("line-too-long", index);
    memmove(p->in, p->in + start, p->inlen - start);
    p->inlen -= start;
    flush(p);
}

static void usage(void) {
    fprintf(stderr, "usage: loadgen ack|churn|relay HOST PORT [-c CONNS] [-d SECS] [-p IN_FLIGHT] "
                    "[-g GREETING_LINES] [-m MSG] [-s SENDERS] [-w WINDOW]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 4) usage();
    if (!strcmp(argv[1], "ack")) mode = ACK;
    else if (!strcmp(argv[1], "churn")) mode = CHURN;
    else if (!strcmp(argv[1], "relay")) mode = RELAY;
    else usage();
    server.sin_family = AF_INET;
    server.sin_port = htons(atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &server.sin_addr) != 1) usage();
    for (int i = 4; i + 1 < argc; i += 2) {
        const char *value = argv[i + 1];
        switch (argv[i][1]) {
        case 'c': conns = atoi(value); break;
        case 'd': duration = atof(value); break;
        case 'p': inFlight = atoi(value); break;
        case 'g': greeting = atoi(value); break;
        case 'm': message = value; break;
        case 's': senders = atoi(value); break;
        case 'w': window = atoi(value); break;
        default: usage();
        }
    }
    if (conns < 1 || inFlight < 1 || window < 1) usage();
    if (mode == RELAY && (senders < 1 || senders >= conns)) usage();
    histogram = calloc(MAX_LATENCY_US, sizeof *histogram);
    peers = calloc(conns, sizeof *peers);
    epfd = epoll_create1(0);
    for (int i = 0; i < conns; i++) {
        peers[i].sentAt = calloc(inFlight, sizeof(double));
        peers[i].receivedBy = calloc(window, sizeof(int));
        peers[i].sentTime = calloc(window, sizeof(double));
        peers[i].expected = calloc(senders, sizeof(long));
        openPeer(i);
    }
    if (mode == RELAY) usleep(300000); /* every client registered before anyone sends */
    double start = now(), lastProgress = start;
    for (int i = 0; i < conns; i++) {
        if (greeting == 0 && mode != CHURN) begin(&peers[i], i);
        flush(&peers[i]);
    }
    struct epoll_event events[256];
    while (now() - start < duration) {
        int n = epoll_wait(epfd, events, 256, 100);
        for (int i = 0; i < n; i++) readable(events[i].data.u32);
        if (progress) {
            progress = 0;
            lastProgress = now();
        } else if (now() - lastProgress > 3) {
            printf("error=stalled mode=%s done=%ld echoes=%ld bad=%ld\n", argv[1], done, echoes, bad);
            return 1;
        }
    }
    double secs = now() - start;
    const char *counted = mode == ACK ? "replies" : mode == CHURN ? "cycles" : "deliveries";
    printf("mode=%s conns=%d secs=%.2f %s=%ld rate=%.0f p50_us=%ld p99_us=%ld", argv[1], conns, secs,
           counted, done, done / secs, percentile(0.5), percentile(0.99));
    if (mode == RELAY) printf(" echoes=%ld bad=%ld", echoes, bad);
    printf("\n");
    return 0;
}
