"""The original design, as described, for the benchmark to compare against.

A thread per connection; one global lock around a dict cache of at most
64 MiB with FIFO eviction; files are read whole into memory. It speaks
tcpcache's GET protocol (`GET path\\n` -> `OK <len>\\n` + body, or
`ERR <code> <message>\\n`) and nothing else: no ranges, no percent-decoding,
no other commands. It is deliberately as simple as the description, not a
straw man: TCP_NODELAY is set so that Nagle's algorithm does not stall the
header/body pair, and the lock is not held while bytes are sent.

    python3 original_design.py --dir DIR [--port 0] [--cache-size BYTES]

Prints `listening on 127.0.0.1:PORT` once it accepts connections.
"""

import argparse
import collections
import os
import socket
import threading

CAPACITY = 64 * 1024 * 1024
MAX_LINE = 8192


class FifoCache:
    """Path -> bytes, at most `capacity` bytes, oldest evicted first; one lock for all."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.used = 0
        self.entries = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, root, path):
        with self.lock:
            data = self.entries.get(path)
            if data is not None:
                return data
            # The original design reads the file under the lock, so concurrent
            # misses of one path read it once (and every other request waits).
            with open(os.path.join(root, path), "rb") as f:
                data = f.read()
            if len(data) <= self.capacity:
                while self.used + len(data) > self.capacity:
                    _, evicted = self.entries.popitem(last=False)
                    self.used -= len(evicted)
                self.entries[path] = data
                self.used += len(data)
            return data


def valid(path):
    parts = path.split("/")
    return path and not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def serve(conn, root, cache):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = conn.makefile("rb")
    try:
        while True:
            line = reader.readline(MAX_LINE + 1)
            if not line:
                return
            words = line.rstrip(b"\r\n").decode("utf-8", "replace").split(" ")
            if len(words) != 2 or words[0].upper() != "GET":
                conn.sendall(b"ERR 400 bad request\n")
            elif not valid(words[1]):
                conn.sendall(b"ERR 400 bad path\n")
            else:
                try:
                    data = cache.get(root, words[1])
                except OSError:
                    conn.sendall(b"ERR 404 not found\n")
                    continue
                conn.sendall(b"OK %d\n" % len(data))
                conn.sendall(data)
    except OSError:
        pass  # the client went away
    finally:
        reader.close()
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cache-size", type=int, default=CAPACITY)
    args = parser.parse_args()
    cache = FifoCache(args.cache_size)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1024)
    print("listening on 127.0.0.1:%d" % listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, args.dir, cache), daemon=True).start()


if __name__ == "__main__":
    main()
