"""Shared fixtures of the lip-frontend tests: a moving face video and the corpus tool."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
from skimage import data

ROOT = Path(__file__).resolve().parents[1]
#: Centre of the astronaut's face in skimage's 512x512 photo.
FACE_CENTRE = (225.0, 140.0)


def talking_face(
    n: int,
    size: tuple[int, int],
    *,
    turn: float,
    scale: float,
    sway: float,
    zoom: float = 0.0,
    bob: float = 0.0,
) -> np.ndarray:
    """The astronaut photo moving over one period of ``n`` frames.

    Frame ``i`` (phase ``p = 2 pi i / n``) shows the face centred at
    ``(W/2 + sway sin p, H/2 + bob cos p)``, turned by ``turn sin p`` degrees
    and scaled by ``scale + zoom sin 2p``, on a grey background.

    Args:
        n: frames.
        size: ``(width, height)`` of the video.
        turn: in-plane rotation amplitude in degrees.
        scale: photo pixels -> video pixels.
        sway: horizontal movement amplitude in pixels.
        zoom: scale amplitude (twice the sway's frequency).
        bob: vertical movement amplitude in pixels.

    Returns:
        ``uint8 (n, H, W, 3)`` RGB frames.
    """
    face = data.astronaut()
    width, height = size
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        phase = 2 * np.pi * i / n
        m = cv2.getRotationMatrix2D(FACE_CENTRE, turn * np.sin(phase), scale + zoom * np.sin(2 * phase))
        m[:, 2] += (
            width / 2 + sway * np.sin(phase) - FACE_CENTRE[0],
            height / 2 + bob * np.cos(phase) - FACE_CENTRE[1],
        )
        frames[i] = cv2.warpAffine(face, m, (width, height), borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90))
    return frames


def load_extract_lips() -> ModuleType:
    """A fresh copy of ``tools/extract_lips.py`` as module ``extract_lips``.

    Registered in ``sys.modules`` under that name: its worker processes import it by name.
    """
    spec = importlib.util.spec_from_file_location("extract_lips", ROOT / "tools" / "extract_lips.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["extract_lips"] = module
    spec.loader.exec_module(module)
    return module
