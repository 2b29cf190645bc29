"""Named crop presets: where the mouth is cut, at what scale, after what smoothing.

A preset turns the (gap-filled) face-mesh landmarks of some frames into the
affine maps from frame pixels to crop pixels; :class:`~avsr.vision.mouth.MouthCropper`
then resamples each frame once with them. Two presets exist:

``avsr`` (default)
    This project's own geometry (:func:`avsr.vision.mouth.mouth_transforms`):
    similarity to mediapipe's canonical face on the eye corners and nose tip,
    crop centred on the mouth, reference mouth width 45 % of the crop, landmarks
    smoothed over 5 frames. The shipped models were trained on it.

``auto_avsr``
    The mouth crop of Auto-AVSR (Ma et al., ICASSP 2023; ``mpc001/auto_avsr``,
    ``preparation/detectors/retinaface/video_process.py``), which their public
    LRS3 models were trained on (RetinaFace + FAN 68-point landmarks). Per frame:

    1. the 68 points, here read off the mediapipe mesh (:data:`MESH_TO_68`),
       are averaged over ``window_margin = 12`` (frames ``t-6 .. t+6``, the
       window shrinking symmetrically at the ends), then shifted back so that
       their centroid is the frame's own (smoothing steadies rotation and scale,
       not position);
    2. a similarity (``cv2.estimateAffinePartial2D``, LMedS, as theirs) maps
       the 8 stable points (nose bridge 28 and base 33, eye corners 36, 39,
       42, 45, mouth corners 48, 54) onto their mean face
       (``20words_mean_face.npy``, :data:`MEAN_FACE`), a 256 x 256 frame; the
       image is warped into that frame at its scale, nothing is resized;
    3. the crop is the 96 x 96 window ``[round(c - 48), round(c + 48))`` of the
       aligned frame around ``c``, the mean of the aligned mouth points 48-67;
       gray (converted before the warp, as theirs), black outside the video.

    Their models then take the central 88 x 88 (:func:`~avsr.vision.mouth.center_crop`)
    and normalise ``(x / 255 - 0.421) / 0.165``; that is the model's business.
    One deliberate difference: when the warp shrinks the face more than twice
    (HD video; LRS3 is 224 x 224) the source is first area-averaged, so the
    crop does not alias (their bilinear warp would).

Example:
    >>> get_preset("auto_avsr").smooth_window
    13
    >>> get_preset("lrs3")
    Traceback (most recent call last):
    ...
    avsr.errors.InputError: unknown crop preset 'lrs3'; choose from: avsr, auto_avsr
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np

from avsr.errors import InputError
from avsr.vision.align import apply_transform, similarity_transforms

__all__ = [
    "CropPreset",
    "AvsrPreset",
    "AutoAvsrPreset",
    "PRESETS",
    "DEFAULT_PRESET",
    "get_preset",
    "MEAN_FACE",
    "MESH_TO_68",
    "STABLE_POINTS",
    "MOUTH_POINTS",
    "landmarks_68",
]

#: Auto-AVSR's reference face: the mean of 68-point landmarks over the 20-word
#: LRW subset, in a 256 x 256 frame (``20words_mean_face.npy``, float64
#: ``(68, 2)`` x, y; the same file in ``mpc001/auto_avsr``,
#: ``Lipreading_using_Temporal_Convolutional_Networks`` and AV-HuBERT's
#: preparation). Point numbering is the usual iBUG 68: jaw 0-16, brows 17-26,
#: nose 27-35, eyes 36-47, outer lips 48-59, inner lips 60-67; "right" is the
#: subject's right, on the image left.
MEAN_FACE = np.array(
    [
        [70.92383848116445, 97.13757949462641], [72.62515288351078, 114.90361188285254],
        [75.98941827444136, 131.07402472829844], [79.2695931821559, 146.2116595997759],
        [83.61348894398981, 163.26020701139876], [91.33134185681857, 177.44535288004224],
        [100.27169244578133, 187.08855670427997], [112.12435016388423, 196.00353535226736],
        [130.7417580075817, 200.5299886205456], [149.85530270092573, 195.3119806538203],
        [163.10168700103682, 186.44060881414399], [173.65334171534926, 176.5725015818616],
        [182.4361445903047, 162.27992571994974], [187.16738555724973, 145.09391977605495],
        [190.22905332928843, 129.72418731003313], [193.02118502126157, 113.45923357784717],
        [194.43863372217956, 95.57953920495954], [81.33095966664638, 80.7954451081944],
        [87.75906555768356, 75.27980275239393], [96.22692544456642, 73.83857496648524],
        [104.55524334700424, 74.74029382053662], [112.23186143963814, 76.97670953698955],
        [144.49576387205596, 76.42387471498733], [152.34799900707932, 73.83329748466542],
        [161.13054078871582, 72.6357038526189], [170.5871567415716, 73.84785054186868],
        [178.21409885404546, 79.4380285679228], [128.733742497853, 95.35962565543399],
        [128.48854473271905, 106.92459505614299], [128.24475936187915, 118.27285085803828],
        [128.2659654694305, 127.69870726985474], [118.7600011311932, 135.19357677297927],
        [122.96307973457223, 136.14619773626936], [128.87017960974802, 137.30253355584708],
        [134.94283139516824, 135.99720543270277], [139.48259748050492, 134.87763793235783],
        [92.52245552947952, 94.36876013925871], [97.58518219091603, 90.95977780864015],
        [105.41368272534791, 90.91345887337647], [112.7724172413806, 94.94360869870115],
        [106.1036350029978, 97.0848569305685], [98.0462856522737, 97.36335869283778],
        [145.52511509158018, 94.5349986248377], [152.5895343844843, 90.21485665622998],
        [160.6117066599242, 90.19938513610091], [166.67710071343456, 93.56562295717796],
        [160.5597157158167, 96.48125957611816], [152.2046599320386, 96.47281336075321],
        [107.16760614090083, 157.19606764242243], [114.4761121594912, 152.12006956869445],
        [123.84852759001141, 148.5186319927202], [128.97628287508832, 149.41552526584132],
        [134.14360702818732, 148.4262821063011], [144.17717841903226, 151.7934326195266],
        [152.19284005377082, 156.98711116207943], [143.85966895195557, 164.0034710111701],
        [136.7441506983738, 167.94300059697187], [129.15278277857666, 168.81853365656912],
        [121.79511073818607, 168.0227192850946], [115.27508573225096, 164.1515935501153],
        [109.23088653400715, 157.0017210276686], [122.50270761831963, 154.40733648815748],
        [129.02862235738357, 154.1210422747831], [135.83648069066908, 154.31214997881702],
        [150.7578280913324, 156.79506003838384], [135.66204627207122, 160.62976731508437],
        [128.95218547222623, 161.28762709004087], [122.48775431575005, 160.50878431332862],
    ],
    dtype=np.float64,
)

#: The mediapipe mesh point standing in for each of the 68 points. Eye and
#: mouth corners, nose bridge, tip and base are the same anatomical points in
#: both schemes; along the lip contours the mesh point nearest to the 68-point
#: spacing (a third / two thirds of the way from the midline to the corner) was
#: taken, along the jaw and brows evenly spaced ones. Left/right symmetric.
MESH_TO_68 = np.array(
    [127, 234, 93, 132, 58, 172, 150, 176, 152, 400, 379, 397, 288, 361, 323, 454, 356,  # jaw 0-16
     70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows 17-26
     168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose bridge 27-30, base 31-35
     33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47
     61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
     78, 82, 13, 312, 308, 317, 14, 87],  # inner lips 60-67
    dtype=np.intp,
)
#: Their stable points (68-point numbering): the similarity is fitted on these.
STABLE_POINTS = np.array([28, 33, 36, 39, 42, 45, 48, 54], dtype=np.intp)
#: Their crop centre is the mean of these (the 20 lip points).
MOUTH_POINTS = np.arange(48, 68, dtype=np.intp)


def landmarks_68(mesh: np.ndarray) -> np.ndarray:
    """The 68-point landmarks read off mediapipe mesh landmarks.

    Args:
        mesh: ``(..., 468, 2)`` mesh points.

    Returns:
        ``(..., 68, 2)`` float64, ordered as :data:`MEAN_FACE`.
    """
    return np.asarray(mesh, dtype=np.float64)[..., MESH_TO_68, :]


@dataclass(frozen=True)
class CropPreset(ABC):
    """How mouth crops are cut: a named geometry plus its smoothing and pixel settings.

    Attributes:
        name: what users type (``--preset NAME``).
        smooth_window: frames in the centred moving average of the landmarks.
        gray_first: convert frames to gray before warping (else after).
        border_value: gray level outside the video, or ``None`` to repeat its edge.
    """

    name: str
    smooth_window: int
    gray_first: bool = False
    border_value: int | None = None

    @abstractmethod
    def transforms(self, filled: np.ndarray, smoothed: np.ndarray, size: int) -> np.ndarray:
        """Frame-to-crop matrices.

        Args:
            filled: ``(T, 468, 2)`` gap-filled landmarks of the frames.
            smoothed: the same after :func:`~avsr.vision.align.smooth` with
                :attr:`smooth_window` (computed over the whole track).
            size: crop side in pixels.

        Returns:
            ``(T, 2, 3)`` float64 affine maps, frame pixels -> crop pixels.
        """


@dataclass(frozen=True)
class AvsrPreset(CropPreset):
    """This project's geometry (see :func:`avsr.vision.mouth.mouth_transforms`).

    Attributes:
        mouth_fraction: reference mouth width / crop side.
    """

    mouth_fraction: float = 0.45

    def transforms(self, filled: np.ndarray, smoothed: np.ndarray, size: int) -> np.ndarray:
        from avsr.vision.mouth import mouth_transforms

        return mouth_transforms(smoothed, size, self.mouth_fraction)


@dataclass(frozen=True)
class AutoAvsrPreset(CropPreset):
    """Auto-AVSR's mean-face alignment and 96 x 96 mouth window (see the module docstring)."""

    def transforms(self, filled: np.ndarray, smoothed: np.ndarray, size: int) -> np.ndarray:
        raw = landmarks_68(filled)
        steady = landmarks_68(smoothed)
        steady = steady + raw.mean(axis=1, keepdims=True) - steady.mean(axis=1, keepdims=True)
        reference = MEAN_FACE[STABLE_POINTS]
        out = np.empty((len(steady), 2, 3))
        for t, points in enumerate(np.ascontiguousarray(steady[:, STABLE_POINTS])):
            matrix = cv2.estimateAffinePartial2D(points, reference, method=cv2.LMEDS)[0]
            # LMedS gives up only on degenerate points (all in one place): least squares then
            out[t] = matrix if matrix is not None else similarity_transforms(points, reference)
        centre = apply_transform(out, steady[:, MOUTH_POINTS]).mean(axis=1)  # (T, 2) in the 256 frame
        out[:, :, 2] -= np.round(centre - size // 2)  # window [round(c - size/2), ...) as theirs
        return out


DEFAULT_PRESET = "avsr"

#: name -> preset.
PRESETS: dict[str, CropPreset] = {
    p.name: p
    for p in (
        AvsrPreset("avsr", smooth_window=5),
        AutoAvsrPreset("auto_avsr", smooth_window=13, gray_first=True, border_value=0),
    )
}


def get_preset(preset: str | CropPreset | None = None) -> CropPreset:
    """The crop preset of a name.

    Args:
        preset: a name of :data:`PRESETS`, a preset (returned as is) or ``None`` (the default).

    Returns:
        :class:`CropPreset`.

    Raises:
        InputError: unknown name (the message lists the valid ones).
    """
    if isinstance(preset, CropPreset):
        return preset
    name = DEFAULT_PRESET if preset is None else preset
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise InputError(None, f"unknown crop preset {name!r}; choose from: {', '.join(PRESETS)}") from None
