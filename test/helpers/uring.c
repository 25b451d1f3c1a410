/* Traffic generator for the capture tests' io_uring path (raw syscalls, no liburing): TCP send and receive
 * through IORING_OP_SEND / IORING_OP_RECV. Prints one JSON line {"sport","dport","tx","rx"} of what it moved.
 *   uring tcp-send <ipv4> <port> <bytes> <chunk>    connect, send <bytes> through the ring, close
 *   uring tcp-recv <ipv4> <port>                    listen, accept one, receive through the ring until EOF */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static int setup(struct ring *r)
{
	struct io_uring_params p;
	size_t sqsz, cqsz;
	char *sq, *cq;

	memset(&p, 0, sizeof(p));
	r->fd = syscall(__NR_io_uring_setup, 4, &p);
	if (r->fd < 0)
		return -1;
	sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP)
		sqsz = cqsz = sqsz > cqsz ? sqsz : cqsz;
	sq = mmap(0, sqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		return -1;
	cq = (p.features & IORING_FEAT_SINGLE_MMAP) ? sq
						   : mmap(0, cqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
	if (cq == MAP_FAILED)
		return -1;
	r->sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
		       IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED)
		return -1;
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	return 0;
}

/* One operation, submitted and waited for; returns cqe->res. */
static int op(struct ring *r, int opcode, int fd, void *buf, unsigned len)
{
	unsigned tail = *r->sq_tail, idx = tail & *r->sq_mask, head;
	struct io_uring_sqe *sqe = &r->sqes[idx];
	int res;

	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = opcode;
	sqe->fd = fd;
	sqe->addr = (unsigned long)buf;
	sqe->len = len;
	r->sq_array[idx] = idx;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -errno;
	head = __atomic_load_n(r->cq_head, __ATOMIC_ACQUIRE);
	while (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
		syscall(__NR_io_uring_enter, r->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0);
	res = r->cqes[head & *r->cq_mask].res;
	__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

int main(int argc, char **argv)
{
	static char buf[1 << 16];
	struct sockaddr_in a = {.sin_family = AF_INET}, peer, local;
	socklen_t len = sizeof(peer);
	struct ring r;
	long bytes = 0;
	int fd, c, n, one = 1;

	if (argc < 4)
		return fprintf(stderr, "usage: see the comment at the top of uring.c\n"), 2;
	a.sin_port = htons(atoi(argv[3]));
	inet_pton(AF_INET, argv[2], &a.sin_addr);
	if (setup(&r))
		return perror("io_uring_setup"), 1;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (strcmp(argv[1], "tcp-recv") == 0) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4))
			return perror("listen"), 1;
		printf("READY\n");
		fflush(stdout);
		c = accept(fd, (struct sockaddr *)&peer, &len);
		if (c < 0)
			return perror("accept"), 1;
		while ((n = op(&r, IORING_OP_RECV, c, buf, sizeof(buf))) > 0)
			bytes += n;
		if (n < 0)
			return fprintf(stderr, "recv: %s\n", strerror(-n)), 1;
		close(c);
		printf("{\"sport\":%d,\"dport\":%d,\"tx\":0,\"rx\":%ld}\n", atoi(argv[3]), ntohs(peer.sin_port), bytes);
		return 0;
	}
	if (argc < 6)
		return fprintf(stderr, "usage: see the comment at the top of uring.c\n"), 2;
	long total = atol(argv[4]), chunk = atol(argv[5]);
	if (chunk > (long)sizeof(buf))
		chunk = sizeof(buf);
	memset(buf, 'u', sizeof(buf));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
		return perror("connect"), 1;
	while (bytes < total) {
		n = op(&r, IORING_OP_SEND, fd, buf, total - bytes < chunk ? total - bytes : chunk);
		if (n <= 0)
			return fprintf(stderr, "send: %s\n", strerror(-n)), 1;
		bytes += n;
	}
	len = sizeof(local);
	getsockname(fd, (struct sockaddr *)&local, &len);
	shutdown(fd, SHUT_WR);
	close(fd);
	printf("{\"sport\":%d,\"dport\":%d,\"tx\":%ld,\"rx\":0}\n", ntohs(local.sin_port), atoi(argv[3]), bytes);
	return 0;
}
