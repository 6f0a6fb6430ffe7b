"""Live flow collection: NetFlow v5/v9, IPFIX and sFlow v5 received over UDP.

``decode/`` turns export datagrams into raw flow columns (pure, stateful only in
templates and sequence tracking), ``encode/`` builds export datagrams (for
``flowhawk replay`` and tests), and the collector component receives, decodes,
normalizes and archives.
"""
