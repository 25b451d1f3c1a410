/* Connection-churn generator for bench/producer.ts: a server that accepts, reads to EOF and closes, and a
 * client that opens RATE connections per second (write 100 bytes, close with RST so no TIME_WAIT piles up). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int server(int port) {
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
	char buf[4096];
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 4096)) {
		perror("server");
		return 1;
	}
	printf("READY\n");
	fflush(stdout);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		while (read(c, buf, sizeof(buf)) > 0)
			;
		close(c);
	}
}

static int client(const char *host, int port, double rate, double seconds) {
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	char msg[100];
	long done = 0, failed = 0;
	double start = now();
	memset(msg, 'x', sizeof(msg));
	inet_pton(AF_INET, host, &a.sin_addr);
	while (now() - start < seconds) {
		/* pace: connection i is due at start + i/rate */
		double due = start + done / rate;
		double t = now();
		if (t < due) {
			struct timespec d = { 0, (long)((due - t) * 1e9) };
			nanosleep(&d, NULL);
		}
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(c, (struct sockaddr *)&a, sizeof(a)) == 0 && write(c, msg, sizeof(msg)) == sizeof(msg)) {
			done++;
		} else {
			failed++;
			done++;
		}
		setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(c);
	}
	printf("{\"conns\":%ld,\"failed\":%ld,\"seconds\":%.3f}\n", done - failed, failed, now() - start);
	return 0;
}

int main(int argc, char **argv) {
	if (argc >= 3 && strcmp(argv[1], "server") == 0)
		return server(atoi(argv[2]));
	if (argc >= 6 && strcmp(argv[1], "client") == 0)
		return client(argv[2], atoi(argv[3]), atof(argv[4]), atof(argv[5]));
	fprintf(stderr, "usage: churn server PORT | churn client HOST PORT RATE SECONDS\n");
	return 2;
}
