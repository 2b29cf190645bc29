"""avsr: audio-visual speech recognition and enhancement."""

__version__ = "0.1.0"

from avsr.errors import AVSRError, InputError  # noqa: E402

__all__ = ["AVSRError", "InputError", "__version__"]
