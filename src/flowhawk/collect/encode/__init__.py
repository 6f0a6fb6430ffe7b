"""Export datagram encoders: canonical flows to NetFlow v5/v9, IPFIX and sFlow v5 packets."""
