"""A real QUIC client (aioquic) for brokerwatch's tests: sends its Initial packets for
each NAME to HOST:PORT (loopback or the test's namespace), waits briefly, exits 0.

usage: quic_client.py HOST PORT NAME... | quic_client.py HOST PORT NAME --dump FILE
Each NAME is a socket of its own, in order, from this one process. A NAME of "-" sends
one Initial whose CRYPTO frame holds only a later part of a ClientHello (bytes past its
server name), as a browser's first Initial does when its shuffled ClientHello put the
name in the second one and the peer's port is closed.
--dump writes the first datagram as hex instead of sending (fixture generation).
"""
import os
import socket
import sys
import time

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection


def initial_without_name():
    """One client Initial (QUIC v1, packet number 0) carrying CRYPTO data at offset 600
    only: no ClientHello start, no server name."""
    from aioquic.quic.crypto import CryptoPair

    dcid, scid = os.urandom(8), os.urandom(8)
    pair = CryptoPair()
    pair.setup_initial(cid=dcid, is_client=True, version=1)
    crypto = bytes([0x06, 0x42, 0x58, 0x41, 0x2C]) + os.urandom(300)  # offset 600, 300 bytes
    payload = crypto + bytes(1200 - 30 - 16 - len(crypto))
    length = 4 + len(payload) + 16
    header = (
        bytes([0xC3]) + (1).to_bytes(4, "big")
        + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
        + bytes([0x00]) + (0x4000 | length).to_bytes(2, "big")
        + (0).to_bytes(4, "big")
    )
    return pair.send.encrypt_packet(header, payload, 0)


def send_named(host, port, name):
    """A real client's Initials for `name`, from a socket of their own (sendto)."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=name)
    conn = QuicConnection(configuration=config)
    addr = (host, port)
    conn.connect(addr, now=time.time())
    sock = socket.socket(family(host), socket.SOCK_DGRAM)
    sock.settimeout(0.3)
    for d, _ in conn.datagrams_to_send(now=time.time()):
        sock.sendto(d, addr)
    try:
        sock.recvfrom(65535)
    except OSError:
        pass


def send_without_name(host, port):
    """A connected socket that sends one Initial without the name (see the module doc)."""
    sock = socket.socket(family(host), socket.SOCK_DGRAM)
    sock.connect((host, port))
    sock.send(initial_without_name())
    time.sleep(0.2)


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def main():
    host, port, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if len(names) == 3 and names[1] == "--dump":
        config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=names[0])
        conn = QuicConnection(configuration=config)
        conn.connect((host, port), now=time.time())
        datagrams = [d for d, _ in conn.datagrams_to_send(now=time.time())]
        with open(names[2], "w") as f:
            f.write(datagrams[0].hex() + "\n")
        return 0
    for name in names:
        if name == "-":
            send_without_name(host, port)
        else:
            send_named(host, port, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
