"""A lab HTTPS client for the plaintext tests (OpenSSL through python's ssl module):
one request, or a WebSocket upgrade and one masked text message. Certificates are not
checked (the lab's are self-signed); traffic stays in the test's network namespace or on
loopback."""
import argparse
import http.client
import os
import socket
import ssl
import time
import urllib.parse


def ws_frame(text):
    data = text.encode()
    key = os.urandom(4)
    head = bytes([0x81])
    if len(data) < 126:
        head += bytes([0x80 | len(data)])
    else:
        head += bytes([0x80 | 126]) + len(data).to_bytes(2, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--sleep", type=float, default=0)
    p.add_argument("--data")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--websocket")
    a = p.parse_args()
    # `@FILE`: the value is the file's (kept off the command line, which monitors show).
    at = lambda v: open(v[1:]).read().strip() if v and v.startswith("@") else v
    a.url, a.data, a.websocket = at(a.url), at(a.data), at(a.websocket)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    time.sleep(a.sleep)
    u = urllib.parse.urlsplit(a.url)
    path = u.path + ("?" + u.query if u.query else "")
    if a.websocket is not None:
        raw = socket.create_connection((u.hostname, u.port))
        s = ctx.wrap_socket(raw, server_hostname=u.hostname)
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        s.recv(4096)
        s.sendall(ws_frame(a.websocket))
        s.close()
        return
    c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx)
    headers = dict(h.split(":", 1) for h in a.header)
    body = a.data.encode() if a.data is not None else None
    c.request("POST" if body is not None else "GET", path, body=body, headers=headers)
    c.getresponse().read()


main()
