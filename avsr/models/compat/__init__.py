"""Converters from other toolkits' published checkpoints to :class:`avsr.models.AVSRModel`.

Each converter maps a state dict (already read from its file by
:mod:`avsr.checkpoints`, which alone touches files) onto a model built
from the parts of :mod:`avsr.models`; after conversion nothing downstream
knows where a model came from.

* :mod:`avsr.models.compat.auto_avsr`: Auto-AVSR (Ma et al., ICASSP 2023)
  audio, video and audio-visual LRS3 models.
"""
