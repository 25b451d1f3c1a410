/* Traffic generator for the capture tests' batched paths: sendmmsg over UDP or TCP, recvmmsg over UDP.
 * Prints one JSON line {"sport":N,"dport":N,"tx":N,"rx":N} with the bytes its own syscalls reported.
 *   mmsg udp-send <ipv4> <port> <messages> <size>    connected UDP socket, sendmmsg in batches of 8
 *   mmsg tcp-send <ipv4> <port> <messages> <size>    TCP socket, sendmmsg in batches of 8, then close
 *   mmsg udp-recv <ipv4> <port> <messages>           bound UDP socket, recvmmsg until <messages> or 3 s idle */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define BATCH 8

static int fail(const char *what)
{
	perror(what);
	return 1;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	static char buf[BATCH][65536];
	long count, size, done = 0, bytes = 0;
	int tcp, fd, i, n;

	if (argc < 5)
		return fprintf(stderr, "usage: see the comment at the top of mmsg.c\n"), 2;
	tcp = strcmp(argv[1], "tcp-send") == 0;
	a.sin_port = htons(atoi(argv[3]));
	inet_pton(AF_INET, argv[2], &a.sin_addr);
	count = atol(argv[4]);
	size = argc > 5 ? atol(argv[5]) : 65536;
	if (size > 65536)
		size = 65536;
	fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	if (fd < 0)
		return fail("socket");
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		iov[i].iov_base = buf[i];
		iov[i].iov_len = strcmp(argv[1], "udp-recv") == 0 ? sizeof(buf[i]) : (size_t)size;
		memset(buf[i], 'm', sizeof(buf[i]));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	if (strcmp(argv[1], "udp-recv") == 0) {
		struct timeval tv = {.tv_sec = 3};
		int rcvbuf = 16 << 20;

		setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
			return fail("bind");
		printf("READY\n");
		fflush(stdout);
		while (done < count) {
			n = recvmmsg(fd, msgs, BATCH, 0, NULL);
			if (n <= 0)
				break;
			for (i = 0; i < n; i++)
				bytes += msgs[i].msg_len;
			done += n;
		}
		getsockname(fd, (struct sockaddr *)&local, &len);
		printf("{\"sport\":%d,\"dport\":0,\"tx\":0,\"rx\":%ld}\n", ntohs(local.sin_port), bytes);
		return 0;
	}
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
		return fail("connect");
	while (done < count) {
		int want = count - done < BATCH ? (int)(count - done) : BATCH;

		n = sendmmsg(fd, msgs, want, 0);
		if (n <= 0)
			return fail("sendmmsg");
		for (i = 0; i < n; i++)
			bytes += msgs[i].msg_len;
		done += n;
	}
	getsockname(fd, (struct sockaddr *)&local, &len);
	printf("{\"sport\":%d,\"dport\":%d,\"tx\":%ld,\"rx\":0}\n", ntohs(local.sin_port), atoi(argv[3]), bytes);
	if (tcp)
		shutdown(fd, SHUT_WR);
	close(fd);
	return 0;
}
