"""The anomaly kinds: each chooses a target and a window inside its slot and changes flows.

- ``volume_spike``: a periodic device's communication (period <= 30 s) carries
  30-100x its packets for 5-30 min, both ways (TCP), or only sent (CoAP over UDP,
  never answered);
- ``exfiltration``: an internal host uploads 0.3-3 GB to an external address over
  10-40 min, in chunks, to a storage service it already uses or to a new address;
- ``silence``: a periodic device (period <= 60 s) goes quiet for 1-6 h: an IoT
  device stops reporting (no flows at all), or a PLC/meter stops answering polls
  (each poll a single unanswered SYN);
- ``underflow``: a bulk periodic feed (historian, MQTT bridge) carries 3-10% of its
  usual data for 1-4 h, still on schedule;
- ``new_communication``: a host talks to a host/port it never used: a workstation to
  an internal service, a server to a workstation, a device to a new external address;
- ``behavior_shift``: a device's mix changes: an internal scan (40-80 targets in
  2-6 min), or an IoT device probing 40-100 external addresses on telnet (2-6 min);
- ``dns_tunnel``: a client tunnels through the site's DNS server for 10-40 min, each
  query forwarded to an upstream resolver (tunnel names are never cached): downloading
  (its usual queries answered 15-40x larger, query rate unchanged) or uploading
  (60-150 queries a minute whose names carry 120-250 bytes of data each);
- ``port_shift``: a server port suddenly gets 10-30 connections a minute from one new
  client (ssh brute force from the internet, RDP password spraying from a workstation);
- ``icmp_burst``: a ping flood (30-100x the packets of a monitored ping: the one to
  the internet when the site has it, else an internal one) or a ping sweep of 120-200
  internal addresses.
"""

from __future__ import annotations

from flowhawk.sim.changes import behavior_shift, icmp_burst, new_communication, port_shift
from flowhawk.sim.tunnel import dns_tunnel
from flowhawk.sim.volume import exfiltration, silence, underflow, volume_spike

#: Each kind's variants: the n-th anomaly of a kind prefers variant n (cycling), so
#: asking for as many anomalies per kind as it has variants covers them all.
VARIANTS = {
    "volume_spike": ("both", "sent"),
    "exfiltration": ("known_destination", "new_destination"),
    "silence": ("stops_reporting", "stops_answering"),
    "underflow": ("historian", "mqtt-bridge"),
    "new_communication": ("internal_service", "lateral", "external"),
    "behavior_shift": ("fanout", "iot_fanout"),
    "dns_tunnel": ("download", "upload"),
    "port_shift": ("ssh_bruteforce", "rdp_spraying"),
    "icmp_burst": ("flood", "sweep"),
}
INJECTORS = {
    "volume_spike": volume_spike,
    "exfiltration": exfiltration,
    "silence": silence,
    "underflow": underflow,
    "new_communication": new_communication,
    "behavior_shift": behavior_shift,
    "dns_tunnel": dns_tunnel,
    "port_shift": port_shift,
    "icmp_burst": icmp_burst,
}
KINDS = tuple(INJECTORS)
