/* The data path of benchmarks/relay_calls.py's load generator, in C so that the
 * generator (not the relay) is never what limits the measurement.
 *
 * The Python side sets the calls up (TURN Allocate + ChannelBind) on UDP
 * sockets it then hands over (inherited file descriptors). This program paces
 * one ChannelData message of PAYLOAD bytes on every socket every 20 ms
 * (the sockets spread over 20 slots of 1 ms), counts what comes back, prints
 * "SENT" when the sending window ends, drains for DRAIN seconds and prints
 * one line: "sent received late_slots slots window_s silent_sockets" (sockets that
 * received nothing: a call that never got through, as opposed to scattered loss).
 *
 *   pacer SERVER_PORT SECONDS DRAIN PAYLOAD FD...
 *
 * Bounded: it runs SECONDS + DRAIN and exits; it only sends to 127.0.0.1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 20
#define PERIOD 0.020
#define MAX_EVENTS 512
#define MAX_FD 65536

static long hits[MAX_FD]; /* datagrams received per file descriptor */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Wait up to `timeout` seconds (ns resolution: no busy wait between 1 ms slots),
 * then read every ready socket dry. */
static long drain_ready(int epoll, double timeout, struct epoll_event *events, char *buffer) {
    long received = 0;
    if (timeout < 0) timeout = 0;
    struct timespec wait = {.tv_sec = (time_t)timeout,
                            .tv_nsec = (long)((timeout - (double)(time_t)timeout) * 1e9)};
    int ready = epoll_pwait2(epoll, events, MAX_EVENTS, &wait, NULL);
    for (int i = 0; i < ready; i++) {
        for (;;) {
            ssize_t size = recv(events[i].data.fd, buffer, 2048, MSG_DONTWAIT);
            if (size < 0) break;
            if (size >= 4) {
                received++;
                hits[events[i].data.fd]++;
            }
        }
    }
    return received;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: pacer PORT SECONDS DRAIN PAYLOAD FD...\n");
        return 2;
    }
    int port = atoi(argv[1]);
    double seconds = atof(argv[2]), drain = atof(argv[3]);
    int payload = atoi(argv[4]);
    int count = argc - 5;
    if (payload < 0 || payload > 1200 || seconds > 600 || drain > 60) return 2;
    int *fds = calloc((size_t)count, sizeof(int));
    int epoll = epoll_create1(0);
    for (int i = 0; i < count; i++) {
        fds[i] = atoi(argv[5 + i]);
        if (fds[i] < 0 || fds[i] >= MAX_FD) return 2;
        struct epoll_event event = {.events = EPOLLIN, .data.fd = fds[i]};
        if (epoll_ctl(epoll, EPOLL_CTL_ADD, fds[i], &event) != 0) {
            perror("epoll_ctl");
            return 1;
        }
    }
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &server.sin_addr);
    char packet[4 + 1200];
    memset(packet, 0, sizeof packet);
    packet[0] = 0x40; /* channel 0x4000 */
    packet[1] = 0x00;
    packet[2] = (char)(payload >> 8);
    packet[3] = (char)(payload & 0xff);
    char buffer[2048];
    struct epoll_event events[MAX_EVENTS];
    long sent = 0, received = 0, late = 0, slot = 0;
    double slot_s = PERIOD / SLOTS;
    double started = now(), end = started + seconds;
    for (;;) {
        double due = started + (double)slot * slot_s;
        if (due >= end) break;
        double t = now();
        if (t >= due) {
            if (t - due > PERIOD) late++;
            for (int i = (int)(slot % SLOTS); i < count; i += SLOTS) {
                if (sendto(fds[i], packet, (size_t)(4 + payload), 0,
                           (struct sockaddr *)&server, sizeof server) >= 0)
                    sent++;
            }
            slot++;
            continue;
        }
        received += drain_ready(epoll, due - t, events, buffer);
    }
    double window = now() - started;
    printf("SENT\n");
    fflush(stdout);
    double drain_end = now() + drain;
    for (double t = now(); t < drain_end; t = now()) {
        received += drain_ready(epoll, drain_end - t, events, buffer);
    }
    int silent = 0;
    for (int i = 0; i < count; i++)
        if (hits[fds[i]] == 0) silent++;
    printf("%ld %ld %ld %ld %.6f %d\n", sent, received, late, slot > 0 ? slot : 1, window,
           silent);
    return 0;
}
