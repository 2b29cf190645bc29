"""avsr: audio-visual speech recognition and enhancement."""

__version__ = "0.1.0"

from avsr.errors import AVSRError, InputError  # noqa: F401,E402
