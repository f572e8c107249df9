#!/usr/bin/env python3
"""Ask one DNS server for a name's A records, print them one a line (stdlib
only; the test machine has no dig). Exit 1 when there is no answer.

Usage: dnsq.py SERVER NAME
"""

import random
import socket
import struct
import sys


def query(server, name, timeout=1.0):
    qid = random.randrange(1 << 16)
    question = b"".join(
        bytes([len(part)]) + part.encode() for part in name.rstrip(".").split(".")
    ) + b"\0" + struct.pack(">HH", 1, 1)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, 53))
        data, _ = s.recvfrom(4096)
    rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    if rid != qid or flags & 0xF:
        return []
    pos = 12 + len(question)
    found = []
    for _ in range(an):
        # the answer's name is a pointer (2 bytes) or labels
        while data[pos] != 0 and data[pos] & 0xC0 != 0xC0:
            pos += data[pos] + 1
        pos += 2 if data[pos] & 0xC0 == 0xC0 else 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[pos : pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            found.append(socket.inet_ntoa(data[pos : pos + 4]))
        pos += rdlen
    return found


if __name__ == "__main__":
    try:
        ips = query(sys.argv[1], sys.argv[2])
    except OSError as e:
        sys.exit(f"dnsq: {e}")
    print("\n".join(ips))
    sys.exit(0 if ips else 1)
