"""The behavioral engine: per-bucket aggregates of each view (the behavioral log),
baselines learned from them, and the volume and clustering detectors (M2-M25)."""
