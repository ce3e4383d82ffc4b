#!/usr/bin/env python3
"""A small HTTP application for the sidecar tests (what a team's Python
service would be): GET / names the upstream; /health; /status/<code>;
/slow?ms=N; /headers echoes the request headers as JSON; /big streams N
bytes (chunked); POST /echo streams the body back with its length; GET
/upgrade with `Upgrade: echo` switches protocols and echoes raw bytes.

usage: upstream.py PORT NAME
"""
import json, socketserver, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are separate writes: without this, Nagle's algorithm and
    # the peer's delayed ACK add 40 ms to every kept-alive response.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def send_text(self, code, text, extra=()):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if path == "/headers" or path.startswith("/headers/"):
            path = "/headers"
        if path == "/":
            self.send_text(200, f"hello from {NAME}\n", [("X-App", NAME)])
        elif path == "/health":
            self.send_text(200, "healthy\n")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self.send_text(code, f"status {code} from {NAME}\n")
        elif path == "/slow":
            time.sleep(int(params.get("ms", "1000")) / 1000)
            self.send_text(200, f"slow from {NAME}\n")
        elif path == "/headers":
            seen = {k.lower(): v for k, v in self.headers.items()}
            seen[":path"] = self.path
            self.send_text(200, json.dumps(seen))
        elif path == "/big":
            size = int(params.get("bytes", str(1 << 20)))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            left = size
            while left > 0:
                part = chunk[: min(left, len(chunk))]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                left -= len(part)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/upgrade" and self.headers.get("Upgrade", "").lower() == "echo":
            self.send_response(101)
            self.send_header("Upgrade", "echo")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.connection.recv(65536)
                if not data:
                    break
                self.connection.sendall(data)
            self.close_connection = True
        else:
            self.send_text(404, "no such route\n")

    def do_POST(self):
        if self.path != "/echo":
            return self.send_text(404, "no such route\n")
        total, chunks = 0, []
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size)); self.rfile.readline()
        else:
            chunks.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        body = b"".join(chunks)
        self.send_text(200, f"{len(body)} bytes\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    PORT, NAME = int(sys.argv[1]), sys.argv[2]
    Server(("127.0.0.1", PORT), Handler).serve_forever()
