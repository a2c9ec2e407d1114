#!/usr/bin/env python3
"""A TCP proxy that puts a round-trip time between its clients and one server (python3 stdlib only).

    latency-proxy.py --listen 127.0.0.1:9100 --to 127.0.0.1:9000 --rtt-ms 25 [--no-handshake] [--pidfile F]

Every chunk read from either side is written to the other side rtt/2 after it arrived (delivery
time = arrival + rtt/2, order preserved per direction); nothing caps the throughput (reads of up to
256 KiB, only a 64 MiB per-direction queue pauses the reading side). TCP_NODELAY on both sockets.
Any number of concurrent connections. A half-close (EOF) or a close is passed on rtt/2 after it
came, behind the data that came before it.

The TCP handshake: the client's connect() to the proxy completes at once (loopback), so without
help a new connection would cost one round trip less than at a real distance, where the client can
send its first byte only after the SYN/SYN-ACK round trip. Unless --no-handshake, the client's first
data on a connection is held until one RTT after the accept (then rtt/2 on the way, as every chunk):
a new connection plus one request/response costs 2 RTT, as it would over a real link. Connection
reuse (keep-alive) therefore pays off here as it does against a distant S3 endpoint. The upstream
connection is opened at accept time (so the server sees the connection early; it only matters for
servers that talk first, which HTTP servers don't).

SIGTERM/SIGINT stop it. Counters (connections, bytes each way) are printed to stderr at exit.
"""
import argparse, asyncio, collections, os, signal, socket, sys, time

CHUNK = 256 * 1024
QUEUE_MAX = 64 * 2 ** 20
EOF, CLOSE = object(), object()
EARLY = 0.0015                            # s: timers are set this much before the due time
stats = dict(conns=0, up=0, down=0, open=0)


def hostport(s):
    h, _, p = s.rpartition(":")
    return h or "127.0.0.1", int(p)


def nodelay(transport):
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Pipe:
    """One direction: chunks delivered to `dst` at their due time, in order."""

    def __init__(self, loop, delay, counter):
        self.loop, self.delay, self.counter = loop, delay, counter
        self.q = collections.deque()          # (due, data | EOF | CLOSE)
        self.qbytes = 0
        self.dst = None                       # transport written to (None until connected)
        self.src = None                       # transport read from (paused when the queue is full)
        self.timer = None
        self.hold_until = 0.0                 # no delivery before this (the emulated handshake)
        self.src_paused = self.dst_full = False

    def push(self, item, now):
        due = max(now, self.hold_until) + self.delay
        if self.q and self.q[-1][0] > due:    # never overtake what is already queued
            due = self.q[-1][0]
        self.q.append((due, item))
        if isinstance(item, bytes):
            self.qbytes += len(item)
            self.counter[0] += len(item)
            if self.qbytes > QUEUE_MAX:
                self.pause_src()
        self.schedule()

    def pause_src(self):
        if self.src is not None and not self.src_paused and not self.src.is_closing():
            self.src.pause_reading(); self.src_paused = True

    def maybe_resume_src(self):
        if self.src_paused and self.qbytes <= QUEUE_MAX // 2 and not self.dst_full and not self.src.is_closing():
            self.src.resume_reading(); self.src_paused = False

    def schedule(self):
        if self.timer is None and self.q and self.dst is not None:
            # asyncio's timers fire 1-2 ms late (epoll's millisecond timeout, rounded up twice):
            # wake up EARLY ahead and sleep the rest precisely in flush()
            self.timer = self.loop.call_at(self.q[0][0] - EARLY, self.flush)

    def flush(self):
        self.timer = None
        now = self.loop.time()
        if self.q and 0 < self.q[0][0] - now <= EARLY + 0.0005:
            time.sleep(self.q[0][0] - now)    # at most ~2 ms, only when the timer came early
            now = self.loop.time()
        while self.q and self.q[0][0] <= now + 0.0001:
            _, item = self.q.popleft()
            if item is EOF:
                if not self.dst.is_closing():
                    try:
                        if self.dst.can_write_eof():
                            self.dst.write_eof()
                        else:
                            self.dst.close()
                    except (OSError, RuntimeError):
                        self.dst.close()
            elif item is CLOSE:
                self.dst.close()
            else:
                self.qbytes -= len(item)
                if not self.dst.is_closing():
                    self.dst.write(item)
        self.maybe_resume_src()
        self.schedule()


class Side(asyncio.Protocol):
    """One socket; data it reads goes into `out` (the pipe towards the other socket)."""

    def __init__(self, out, into, name):
        self.out, self.into, self.name = out, into, name   # out: we read -> other writes; into: other reads -> we write
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        nodelay(transport)
        transport.set_write_buffer_limits(high=4 * 2 ** 20)
        self.out.src = transport
        self.into.dst = transport
        self.into.schedule()

    def data_received(self, data):
        self.out.push(data, self.out.loop.time())

    def eof_received(self):
        self.out.push(EOF, self.out.loop.time())
        return True                                          # keep the write half open

    def connection_lost(self, exc):
        self.out.push(CLOSE, self.out.loop.time())

    def pause_writing(self):                                 # our socket's send buffer is full
        self.into.dst_full = True
        self.into.pause_src()

    def resume_writing(self):
        self.into.dst_full = False
        self.into.maybe_resume_src()


class Client(Side):
    def __init__(self, args, loop):
        d = args.rtt_ms / 2000.0
        self.up = Pipe(loop, d, counter=UP)
        self.down = Pipe(loop, d, counter=DOWN)
        super().__init__(self.up, self.down, "client")
        self.args, self.loop = args, loop

    def connection_made(self, transport):
        super().connection_made(transport)
        stats["conns"] += 1; stats["open"] += 1
        if self.args.handshake:
            self.up.hold_until = self.loop.time() + self.args.rtt_ms / 1000.0
        self.loop.create_task(self.connect())

    async def connect(self):
        h, p = self.args.to
        try:
            await self.loop.create_connection(lambda: Side(self.down, self.up, "server"), h, p)
        except OSError as e:
            print(f"latency-proxy: connect {h}:{p}: {e}", file=sys.stderr)
            self.transport.abort()
            return
        self.up.schedule()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        stats["open"] -= 1


UP, DOWN = [0], [0]


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", required=True, type=hostport, help="HOST:PORT to listen on")
    ap.add_argument("--to", required=True, type=hostport, help="HOST:PORT of the server")
    ap.add_argument("--rtt-ms", type=float, default=25.0, help="round-trip time to add (ms); rtt/2 each way")
    ap.add_argument("--no-handshake", dest="handshake", action="store_false",
                    help="don't hold a new connection's first data for one RTT (the emulated TCP handshake)")
    ap.add_argument("--pidfile")
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(args, loop), args.listen[0], args.listen[1],
                                      reuse_address=True, backlog=1024)
    if args.pidfile:
        with open(args.pidfile, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    stop = loop.create_future()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, lambda: stop.done() or stop.set_result(None))
    print(f"latency-proxy: {args.listen[0]}:{args.listen[1]} -> {args.to[0]}:{args.to[1]}, rtt {args.rtt_ms} ms"
          f"{'' if args.handshake else ', no handshake emulation'}", file=sys.stderr, flush=True)
    await stop
    server.close()
    print(f"latency-proxy: {stats['conns']} connections, {UP[0]} bytes up, {DOWN[0]} bytes down", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
