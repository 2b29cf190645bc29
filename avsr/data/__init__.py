"""Data: manifests, datasets and batching, on-the-fly noise, the SynthGRID generator."""
