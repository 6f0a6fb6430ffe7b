"""Packet captures (pcap, pcapng, live interfaces) turned into flows by a built-in meter.

The path is four stages over one byte buffer, each a numba kernel working on columns:
``capfile`` finds the records, ``decode`` turns them into packet columns, ``meter``
aggregates packets into bidirectional flows, and ``source`` / ``live`` drive them and
build Arrow tables. Nothing here is imported until a pcap input is used.
"""
