"""Tests of the site simulator (flowhawk simulate)."""
