"""Audio processing: features (fbank, SpecAugment) and noise mixing."""
