"""Sends COUNT keep-alive `GET /` requests on one connection once PORT answers
(120 s at most), each of which must be a 200 with the body BODY (default
"hello\\n"): the load of the callgrind benchmarks, whose per-request figure
is (Ir(N2) - Ir(N1)) / (N2 - N1).

usage: python3 bench/keepalive.py PORT COUNT [BODY]
"""
import http.client
import sys
import time

port, count = int(sys.argv[1]), int(sys.argv[2])
expected = (sys.argv[3] if len(sys.argv) > 3 else "hello\n").encode()
deadline = time.time() + 120
while True:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/")
        conn.getresponse().read()
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.1)
for _ in range(count):
    conn.request("GET", "/")
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200 and body == expected, (response.status, body)
