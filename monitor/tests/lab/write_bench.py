"""Plaintext benchmark client: a TLS server thread that reads and drops everything, and a
client that writes N records of SIZE bytes through OpenSSL (SSL_write_ex) to it. Prints
{"calls", "bytes", "ns_per_call"} as JSON. Loopback only."""
import json
import os
import socket
import ssl
import sys
import threading
import time

calls, size, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_ctx.load_cert_chain(cert, key)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
port = listener.getsockname()[1]


def serve():
    conn, _ = listener.accept()
    s = server_ctx.wrap_socket(conn, server_side=True)
    while s.recv(65536):
        pass


threading.Thread(target=serve, daemon=True).start()
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="bench.test")
payload = (b"POST /collect HTTP/1.1\r\nHost: bench.test\r\nContent-Length: %d\r\n\r\n" % size)
payload = (payload + os.urandom(size).hex().encode())[:size] if size > len(payload) else payload[:size]
for _ in range(200):
    c.sendall(payload)
start = time.perf_counter_ns()
for _ in range(calls):
    c.sendall(payload)
elapsed = time.perf_counter_ns() - start
c.close()
print(json.dumps({"calls": calls, "bytes": size, "ns_per_call": elapsed / calls}))
