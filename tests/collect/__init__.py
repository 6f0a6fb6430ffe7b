"""Tests of the export collectors and decoders."""
