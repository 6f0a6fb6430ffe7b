"""Context for events: what is known about the addresses and hosts an event involves.

GeoIP/ASN records from MaxMind-format databases, names from passive DNS, and the
east-west hops and relays around risky north-south traffic. Context never changes an
alarm or a risk; it is attached to events so an analyst sees who and where.
"""
