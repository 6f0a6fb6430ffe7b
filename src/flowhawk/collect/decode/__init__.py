"""Export datagram decoders, one module per protocol; ``dispatch`` picks by version."""
