// Test helper (run inside a netns): holds N loopback TCP connection pairs to one listener. Client i writes
// (i % 7) + 1 bytes; once the server side has read every byte it prints `ready <port> <bytes>`, and holds them all open
// until stdin closes (the test's handle on its lifetime: a killed test never leaves this process behind). The clients
// live in a child process: one process may not hold 2N descriptors (RLIMIT_NOFILE, not raisable in a container).
const net = require('net');
const { spawn } = require('child_process');

if (process.argv[2] === '--clients') {
  const [port, n, host] = [Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
  const held = [];
  let next = 0;
  // a bounded number of connects in flight: a burst of 20k SYNs overflows the accept backlog
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const c = net.connect(port, host);
      held.push(c);
      await new Promise((r, j) => c.once('connect', r).once('error', j));
      c.write(Buffer.alloc((i % 7) + 1, 1));
    }
  };
  Promise.all(Array.from({ length: 64 }, worker)).then(
    () => process.stdout.write('connected\n'),
    (e) => (process.stderr.write(`hold-conns clients: ${e.message}\n`), process.exit(1)),
  );
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
} else {
  const [n, host] = [Number(process.argv[2]), process.argv[3] ?? '127.0.0.1'];
  let total = 0;
  for (let i = 0; i < n; i++) total += (i % 7) + 1;
  const held = [];
  let received = 0;
  const server = net.createServer((s) => {
    held.push(s);
    s.on('data', (d) => (received += d.length));
  });
  server.listen({ port: 0, host, backlog: 4096 }, () => {
    const port = server.address().port;
    const clients = spawn(process.execPath, [__filename, '--clients', String(port), String(n), host], { stdio: ['pipe', 'ignore', 'inherit'] });
    clients.on('exit', (code) => code !== 0 && process.exit(1));
    process.stdin.on('end', () => (clients.stdin.end(), process.exit(0)));
    const wait = setInterval(() => {
      if (received < total) return;
      clearInterval(wait);
      process.stdout.write(`ready ${port} ${total}\n`);
    }, 20);
  });
  process.stdin.resume();
}
