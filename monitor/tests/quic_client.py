"""A real QUIC client (aioquic) for brokerwatch's tests: sends its Initial packets for
SERVER_NAME to HOST:PORT (loopback or the test's namespace), waits briefly, exits 0.

usage: quic_client.py HOST PORT SERVER_NAME [--dump FILE]
--dump writes the first datagram as hex instead of sending (fixture generation).
"""
import socket
import sys
import time

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection


def main():
    host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    dump = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--dump" else None
    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=name)
    conn = QuicConnection(configuration=config)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    addr = (host, port)
    conn.connect(addr, now=time.time())
    datagrams = [d for d, _ in conn.datagrams_to_send(now=time.time())]
    if dump:
        with open(dump, "w") as f:
            f.write(datagrams[0].hex() + "\n")
        return 0
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(0.3)
    for d in datagrams:
        sock.sendto(d, addr)
    try:
        sock.recvfrom(65535)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
