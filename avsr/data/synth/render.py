"""Draw an animated mouth: 96x96 mouth crops, or composited onto a face photo.

The mouth is a few anti-aliased polygons drawn with OpenCV from the five
shape parameters of :mod:`avsr.data.synth.visemes`: dark mouth interior,
lower and upper teeth, tongue, then the two lips. Geometry is computed in
*mouth units* (1 = half the mouth width of the speaker at rest; x right,
y down, origin between the lip corners) and mapped to pixels by one affine
matrix, so the same code draws the crop and the full-face composite.

Each speaker has a :class:`MouthStyle` (size, lip thickness and shape,
colours, how wide they open, how sloppily they articulate); each utterance
draws :class:`Nuisance` settings (head jitter, lighting, blur, sensor noise,
JPEG compression, dropped frames, a +-1 frame audio/video offset).

Crop geometry follows :mod:`avsr.vision.mouth`: the mouth centre (mean of
the corners and the outer lip midpoints) sits at the crop centre and the
mouth at rest spans about :data:`~avsr.vision.mouth.MOUTH_FRACTION` of the
crop width, so synthetic crops look like crops the lip frontend cuts from
real video.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from avsr.errors import InputError
from avsr.vision.mouth import MOUTH_FRACTION

__all__ = [
    "CROP_SIZE", "MouthStyle", "Nuisance", "FacePhoto", "mouth_geometry", "draw_mouth", "render_crops", "render_face",
    "apply_nuisance", "frame_index", "face_scale", "to_gray", "load_face", "ASTRONAUT", "ASTRONAUT_IMAGE",
    "MAX_FACE_SIDE",
]

#: Side of the mouth crop (pixels).
CROP_SIZE = 96
_N = 17  # points per lip curve
_SHIFT = 4  # fixed-point bits for sub-pixel polygon drawing
_XS = np.linspace(-1.0, 1.0, _N)

_LIP_PALETTE = np.array([[196, 112, 120], [178, 72, 84], [150, 88, 82], [120, 66, 66], [205, 130, 125]], float)
_SKIN_PALETTE = np.array([[236, 202, 178], [214, 168, 134], [178, 126, 94], [128, 86, 62], [92, 62, 46]], float)


def _color(rng: np.random.Generator, palette: np.ndarray, spread: float) -> tuple[int, int, int]:
    base = palette[rng.integers(len(palette))] + rng.normal(0.0, spread, 3)
    return tuple(int(v) for v in np.clip(base, 0, 255))


@dataclass(frozen=True)
class MouthStyle:
    """How one speaker's mouth looks and moves.

    Attributes:
        scale: mouth width relative to the average (1.0 = 45% of the crop).
        upper_lip: upper lip thickness (mouth units).
        lower_lip: lower lip thickness (mouth units).
        bow: depth of the Cupid's bow, 0..1.
        max_open: lip aperture at ``open = 1`` (mouth units).
        lip_color, skin_color, teeth_color, inner_color, tongue_color: RGB.
        gains: ``(5,)`` multipliers of the viseme parameters (open, spread,
            round, teeth, tongue).
        sigma: coarticulation kernel width in seconds.
    """

    scale: float
    upper_lip: float
    lower_lip: float
    bow: float
    max_open: float
    lip_color: tuple[int, int, int]
    skin_color: tuple[int, int, int]
    teeth_color: tuple[int, int, int]
    inner_color: tuple[int, int, int]
    tongue_color: tuple[int, int, int]
    gains: tuple[float, float, float, float, float]
    sigma: float

    @classmethod
    def from_seed(cls, seed: int) -> "MouthStyle":
        """A random but reproducible style (seed it with the speaker id)."""
        rng = np.random.default_rng(seed)
        lip = _color(rng, _LIP_PALETTE, 12.0)
        skin = _color(rng, _SKIN_PALETTE, 10.0)
        teeth = tuple(int(v) for v in np.clip(np.array([236, 230, 212]) + rng.normal(0, 10, 3), 0, 255))
        inner = tuple(int(v) for v in np.clip(np.array([58, 18, 24]) + rng.normal(0, 8, 3), 0, 255))
        tongue = tuple(int(v) for v in np.clip(np.array([200, 95, 105]) + rng.normal(0, 12, 3), 0, 255))
        return cls(
            scale=float(rng.uniform(0.85, 1.15)),
            upper_lip=float(rng.uniform(0.22, 0.36)),
            lower_lip=float(rng.uniform(0.28, 0.46)),
            bow=float(rng.uniform(0.0, 0.6)),
            max_open=float(rng.uniform(0.95, 1.3)),
            lip_color=lip, skin_color=skin, teeth_color=teeth, inner_color=inner, tongue_color=tongue,
            gains=(float(rng.uniform(0.85, 1.2)), float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.8, 1.15)),
                   float(rng.uniform(0.7, 1.1)), float(rng.uniform(0.7, 1.1))),
            sigma=float(rng.uniform(0.022, 0.04)),
        )


@dataclass(frozen=True)
class Nuisance:
    """Per-utterance nuisance settings.

    Attributes:
        jitter: head motion amplitude (crop pixels at 96x96).
        rotation: head roll amplitude (degrees).
        zoom: scale wobble amplitude (fraction).
        gain: brightness multiplier.
        gamma: gamma applied after the gain.
        ramp: left-to-right brightness ramp (fraction, +-).
        blur: Gaussian blur sigma (crop pixels), 0 = none.
        noise: sensor noise std (grey levels).
        jpeg: JPEG quality per frame (0 = no JPEG round trip).
        dropped: frame indices that repeat the previous frame (dropped frames).
        offset: video delay relative to audio in frames (-1, 0 or +1).
    """

    jitter: float
    rotation: float
    zoom: float
    gain: float
    gamma: float
    ramp: float
    blur: float
    noise: float
    jpeg: int
    dropped: tuple[int, ...]
    offset: int

    @classmethod
    def sample(cls, rng: np.random.Generator, num_frames: int) -> "Nuisance":
        """Draw settings for an utterance of ``num_frames`` frames."""
        n_drop = int(rng.integers(1, 4)) if rng.random() < 0.25 and num_frames > 4 else 0
        dropped = tuple(sorted(int(i) for i in rng.choice(np.arange(1, num_frames), n_drop, replace=False)))
        return cls(
            jitter=float(rng.uniform(0.0, 2.5)), rotation=float(rng.uniform(0.0, 4.0)),
            zoom=float(rng.uniform(0.0, 0.05)), gain=float(rng.uniform(0.7, 1.25)),
            gamma=float(rng.uniform(0.8, 1.25)), ramp=float(rng.uniform(-0.25, 0.25)),
            blur=float(rng.uniform(0.0, 1.2)) if rng.random() < 0.6 else 0.0,
            noise=float(rng.uniform(0.0, 6.0)), jpeg=int(rng.integers(30, 90)) if rng.random() < 0.5 else 0,
            dropped=dropped, offset=int(rng.choice([-1, 0, 0, 0, 1])),
        )

    @classmethod
    def none(cls) -> "Nuisance":
        """No nuisance at all (for tests and figures)."""
        return cls(0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0, (), 0)


# --------------------------------------------------------------------------- geometry


def mouth_geometry(shape: np.ndarray, style: MouthStyle) -> dict[str, np.ndarray]:
    """Lip, teeth and tongue outlines for one mouth shape, in mouth units.

    Args:
        shape: ``(5,)`` viseme parameters (open, spread, round, teeth, tongue).
        style: the speaker's style.

    Returns:
        Polygons ``(K, 2)`` float (x, y): ``"inner"`` (aperture), ``"upper_lip"``,
        ``"lower_lip"``, ``"upper_teeth"``, ``"lower_teeth"``, ``"tongue"``;
        and ``"landmarks"`` ``(4, 2)``: right corner, left corner, top of the
        upper lip, bottom of the lower lip (mediapipe points 61, 291, 0, 17).
    """
    opening, spread, rnd, teeth, tongue = (float(v) for v in shape)
    half_w = 1.0 + 0.16 * spread - 0.28 * rnd  # corners move in when rounding
    inner_w = half_w * (0.92 - 0.42 * rnd)  # the aperture gets round and small
    h = style.max_open * opening  # aperture height
    up, down = 0.35 * h, 0.65 * h  # the jaw drops: the lower lip moves more
    thick = 1.0 + 0.35 * rnd  # protruded lips look fuller
    tu, tl = style.upper_lip * thick, style.lower_lip * thick
    x = _XS
    env = np.sqrt(np.clip(1.0 - x**2, 0.0, 1.0))
    xi = x * inner_w
    inner_env = np.clip(1.0 - (xi / max(inner_w, 1e-3)) ** 2, 0.0, 1.0) ** 0.75
    yu_in = -up * inner_env
    yl_in = down * inner_env
    # outer contour on the same x samples (scaled to the outer width)
    xo = x * half_w
    bow = style.bow * tu * np.exp(-((x / 0.18) ** 2))
    yu_out = -(up * env**1.2 + tu * env**0.6) + bow
    yl_out = down * env**1.2 + tl * env**0.7
    # the inner curves live on [-inner_w, inner_w]; place them on the outer samples for the lips
    yu_in_o = np.interp(xo, xi, yu_in, left=0.0, right=0.0)
    yl_in_o = np.interp(xo, xi, yl_in, left=0.0, right=0.0)
    inner = np.concatenate([np.stack([xi, yu_in], 1), np.stack([xi[::-1], yl_in[::-1]], 1)])
    upper_lip = np.concatenate([np.stack([xo, yu_out], 1), np.stack([xo[::-1], yu_in_o[::-1]], 1)])
    lower_lip = np.concatenate([np.stack([xo, yl_in_o], 1), np.stack([xo[::-1], yl_out[::-1]], 1)])
    # teeth: bands hanging from the upper / standing on the lower inner lip, clipped to the aperture
    tw = np.abs(x) < 0.8
    band_u = np.minimum(yu_in + teeth * (0.08 + 0.55 * h), yl_in)
    upper_teeth = np.concatenate([np.stack([xi[tw], yu_in[tw]], 1), np.stack([xi[tw][::-1], band_u[tw][::-1]], 1)])
    band_l = np.maximum(yl_in - teeth * 0.3 * h * (opening > 0.2), yu_in)
    lower_teeth = np.concatenate([np.stack([xi[tw], band_l[tw]], 1), np.stack([xi[tw][::-1], yl_in[tw][::-1]], 1)])
    # tongue: a bump rising from the floor of the mouth toward the teeth
    bump = np.clip(1.0 - (x / 0.6) ** 2, 0.0, 1.0)
    top = np.maximum(yl_in - tongue * (0.08 + 0.7 * h) * bump, yu_in)
    tongue_poly = np.concatenate([np.stack([xi, top], 1), np.stack([xi[::-1], yl_in[::-1]], 1)])
    landmarks = np.array([[-half_w, 0.0], [half_w, 0.0], [0.0, yu_out[_N // 2]], [0.0, yl_out[_N // 2]]])
    return {
        "inner": inner, "upper_lip": upper_lip, "lower_lip": lower_lip, "upper_teeth": upper_teeth,
        "lower_teeth": lower_teeth, "tongue": tongue_poly, "landmarks": landmarks,
    }


def _to_pixels(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map ``(K, 2)`` mouth-unit points by a ``2x3`` affine to fixed-point int32 pixels."""
    px = points @ matrix[:, :2].T + matrix[:, 2]
    return np.round(px * (1 << _SHIFT)).astype(np.int32)


def _fill(img: np.ndarray, poly: np.ndarray, matrix: np.ndarray, color: tuple[int, ...]) -> None:
    cv2.fillPoly(img, [_to_pixels(poly, matrix)], color, lineType=cv2.LINE_AA, shift=_SHIFT)


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor))) for c in color)


def draw_mouth(img: np.ndarray, geometry: dict[str, np.ndarray], matrix: np.ndarray, style: MouthStyle) -> None:
    """Draw one mouth onto ``img`` in place.

    Args:
        img: ``uint8 (H, W, 3)`` RGB canvas.
        geometry: output of :func:`mouth_geometry`.
        matrix: ``(2, 3)`` affine from mouth units to canvas pixels.
        style: colours.
    """
    _fill(img, geometry["inner"], matrix, style.inner_color)
    _fill(img, geometry["lower_teeth"], matrix, _shade(style.teeth_color, 0.85))
    _fill(img, geometry["tongue"], matrix, style.tongue_color)
    _fill(img, geometry["upper_teeth"], matrix, style.teeth_color)
    _fill(img, geometry["upper_lip"], matrix, _shade(style.lip_color, 0.88))
    _fill(img, geometry["lower_lip"], matrix, _shade(style.lip_color, 1.06))
    seam = _to_pixels(geometry["inner"][: _N], matrix)  # the line where the lips meet
    cv2.polylines(img, [seam], False, _shade(style.lip_color, 0.55), 1, cv2.LINE_AA, _SHIFT)


def _head_motion(rng: np.random.Generator, n: int, nuisance: Nuisance) -> np.ndarray:
    """Smooth random head motion: ``(n, 4)`` = dx, dy (pixels), angle (deg), zoom factor."""
    steps = rng.normal(0.0, 1.0, (n + 8, 4))
    k = np.hanning(9)
    k /= np.sqrt((k**2).sum())
    walk = np.stack([np.convolve(steps[:, j], k, "valid") for j in range(4)], 1)[:n]
    amp = np.array([nuisance.jitter, nuisance.jitter, nuisance.rotation, nuisance.zoom])
    out = walk * amp / 1.5
    out[:, 3] += 1.0
    return out


def _background(style: MouthStyle, size: int, unit: float, centre: np.ndarray) -> np.ndarray:
    """Skin around the mouth: vertical shading, nostril shadows above, chin shadow below."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xx - centre[0]) / unit
    v = (yy - centre[1]) / unit
    shade = 1.0 + 0.06 * np.tanh(-v) - 0.05 * u**2 / 4.0
    for sx in (-0.45, 0.45):  # nostrils
        shade -= 0.35 * np.exp(-(((u - sx) / 0.28) ** 2 + ((v + 2.05) / 0.13) ** 2))
    shade -= 0.05 * np.exp(-((u / 0.12) ** 2 + ((v + 1.3) / 0.5) ** 2))  # philtrum groove
    shade -= 0.12 * np.exp(-(((v - 1.55) / 0.25) ** 2)) * np.exp(-((u / 1.4) ** 2))  # chin fold
    img = np.asarray(style.skin_color, np.float32)[None, None, :] * shade[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def render_crops(
    track: np.ndarray, style: MouthStyle, nuisance: Nuisance, rng: np.random.Generator, size: int = CROP_SIZE
) -> np.ndarray:
    """Render mouth crops (before photometric nuisances).

    Args:
        track: ``(T, 5)`` viseme parameters per frame.
        style: the speaker's look.
        nuisance: head-motion settings are used here.
        rng: randomness for the head motion.
        size: crop side.

    Returns:
        ``uint8 (T, size, size, 3)`` RGB crops.
    """
    unit = MOUTH_FRACTION * size / 2.0 * style.scale  # pixels per mouth unit
    c = (size - 1) / 2.0
    background = _background(style, size, unit, np.array([c, c - 0.05 * unit]))
    motion = _head_motion(rng, len(track), nuisance) * np.array([size / 96.0, size / 96.0, 1.0, 1.0])
    out = np.empty((len(track), size, size, 3), np.uint8)
    for t, shape in enumerate(track):
        geo = mouth_geometry(shape, style)
        centre = geo["landmarks"].mean(axis=0)  # what the lip frontend centres on
        dx, dy, angle, zoom = motion[t]
        a = np.deg2rad(angle)
        rot = unit * zoom * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        matrix = np.concatenate([rot, (np.array([c + dx, c + dy]) - rot @ centre)[:, None]], 1)
        if abs(dx) + abs(dy) + abs(angle) > 1e-3:
            bg_m = np.concatenate([rot / unit, (np.array([c + dx, c + dy]) - rot / unit @ [c, c])[:, None]], 1)
            img = cv2.warpAffine(background, bg_m, (size, size), borderMode=cv2.BORDER_REFLECT)
        else:
            img = background.copy()
        draw_mouth(img, geo, matrix, style)
        out[t] = img
    return out


# --------------------------------------------------------------------------- photometric nuisances


def apply_nuisance(
    frames: np.ndarray, nuisance: Nuisance, rng: np.random.Generator, jpeg: bool = True, scale: float = 1.0
) -> np.ndarray:
    """Lighting, blur, noise, JPEG, dropped frames and A/V offset on rendered frames.

    Args:
        frames: ``uint8 (T, H, W, 3)``.
        nuisance: the settings.
        rng: randomness for noise and flicker.
        jpeg: do the JPEG round trip (off for frames that go into an mp4 anyway).
        scale: image pixels per 96x96-crop pixel (blur is specified in crop pixels).

    Returns:
        ``uint8 (T, H, W, 3)``, same ``T`` (the offset shifts content, repeating the edge frame).
    """
    n, hgt, wid = frames.shape[:3]
    # brightness per column (ramp) and per frame (flicker), then gamma; one frame at a time
    ramp = (nuisance.gain / 255.0) * (1.0 + nuisance.ramp * np.linspace(-1.0, 1.0, wid, dtype=np.float32))
    ramp = ramp.astype(np.float32)[None, :, None]
    flicker = (1.0 + 0.02 * rng.standard_normal(n)).astype(np.float32)
    params = [cv2.IMWRITE_JPEG_QUALITY, nuisance.jpeg]
    out = np.empty_like(frames)
    for i in range(n):
        x = frames[i].astype(np.float32) * (ramp * flicker[i])
        np.minimum(x, 1.0, out=x)
        if nuisance.gamma != 1.0:
            cv2.pow(x, nuisance.gamma, x)
        if nuisance.blur > 0.05:
            x = cv2.GaussianBlur(x, (0, 0), nuisance.blur * scale)
        x *= 255.0
        if nuisance.noise > 0:
            x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(nuisance.noise)
        x += 0.5
        np.clip(x, 0.0, 255.0, out=x)
        out[i] = x.astype(np.uint8)
        if jpeg and nuisance.jpeg > 0:
            ok, buf = cv2.imencode(".jpg", out[i], params)
            if ok:
                out[i] = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out[frame_index(nuisance, n)]


def frame_index(nuisance: Nuisance, num_frames: int) -> np.ndarray:
    """Which rendered frame each output frame shows (dropped frames, A/V offset).

    Returns:
        ``int (num_frames,)``; ``frames[frame_index(...)]`` applies the timing nuisances.
    """
    index = np.arange(num_frames)
    for d in nuisance.dropped:  # a dropped frame shows the previous one again
        if 0 < d < num_frames:
            index[d] = index[d - 1]
    return np.clip(index - nuisance.offset, 0, num_frames - 1)  # offset > 0: video late


def to_gray(frames: np.ndarray) -> np.ndarray:
    """``uint8 (T, H, W, 3)`` RGB -> ``uint8 (T, H, W)`` luma (BT.601, as OpenCV)."""
    w = np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(frames.astype(np.float32) @ w + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- full face


_ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
#: The default face photo: scikit-image's ``astronaut()`` (NASA, public domain), bundled as JPEG.
ASTRONAUT_IMAGE = os.path.join(_ASSETS, "astronaut.jpg")
#: Outer lip contour of scikit-image's astronaut (512x512), mediapipe points
#: 61,185,40,39,37,0,267,269,270,409,291,375,321,405,314,17,84,181,91,146,
#: measured once with avsr.vision.landmarks (static image mode).
ASTRONAUT = np.array([
    [201.8, 139.5], [203.5, 138.6], [206.7, 138.7], [210.6, 138.8], [217.1, 139.3], [223.6, 140.5],
    [230.2, 140.0], [236.8, 140.4], [240.9, 140.8], [244.2, 141.1], [245.9, 142.2], [243.1, 145.8],
    [239.5, 149.3], [234.9, 152.6], [229.3, 154.5], [222.8, 154.9], [216.5, 153.7], [211.2, 151.1],
    [207.1, 147.3], [204.1, 143.4],
])
_OUTER_LIPS = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]


@dataclass
class FacePhoto:
    """A face photo prepared for compositing: its own mouth painted out.

    Attributes:
        image: ``uint8 (H, W, 3)`` RGB with the lips inpainted.
        corners: ``(2, 2)`` right and left mouth corner (pixels).
        centre: ``(2,)`` mouth centre (mean of corners, top and bottom of the lips).
        gray: the photo is black and white (the mouth is then drawn in grey too).
    """

    image: np.ndarray
    corners: np.ndarray
    centre: np.ndarray
    gray: bool = False

    @property
    def half_width(self) -> float:
        """Half the distance between the mouth corners (pixels)."""
        return float(np.linalg.norm(self.corners[1] - self.corners[0]) / 2.0)

    @property
    def angle(self) -> float:
        """Roll of the mouth line (radians)."""
        d = self.corners[1] - self.corners[0]
        return float(np.arctan2(d[1], d[0]))


def _prepare_face(image: np.ndarray, lips: np.ndarray) -> FacePhoto:
    """Inpaint the lips of ``image`` (outer contour ``lips``, 20 points as :data:`ASTRONAUT`)."""
    centre_pts = lips[[0, 10, 5, 15]]
    mask = np.zeros(image.shape[:2], np.uint8)
    hull = cv2.convexHull(np.round(lips).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255)
    half = float(np.linalg.norm(lips[10] - lips[0]) / 2.0)
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(half * 0.35) | 1,) * 2))
    clean = cv2.inpaint(image, mask, max(3, int(half * 0.3)), cv2.INPAINT_TELEA)
    gray = bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
    return FacePhoto(clean, lips[[0, 10]].astype(np.float64), centre_pts.mean(axis=0).astype(np.float64), gray)


#: Longest side (pixels) of the full-face video: larger photos are scaled down, which keeps
#: memory per worker bounded (a 12-megapixel phone photo would need gigabytes per utterance).
MAX_FACE_SIDE = 1024


def _fit_photo(rgb: np.ndarray) -> np.ndarray:
    """Scale a photo down to :data:`MAX_FACE_SIDE` and crop it to even sides (H.264 needs them)."""
    hgt, wid = rgb.shape[:2]
    if max(hgt, wid) > MAX_FACE_SIDE:
        f = MAX_FACE_SIDE / max(hgt, wid)
        size = (max(2, int(round(wid * f))), max(2, int(round(hgt * f))))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2])


@lru_cache(maxsize=4)
def load_face(path: str | None) -> FacePhoto:
    """Load a face photo and find its mouth (``None``: the bundled astronaut).

    The astronaut's mouth position was measured once (:data:`ASTRONAUT`);
    other photos are searched with mediapipe face mesh
    (:mod:`avsr.vision.landmarks`). Any format OpenCV reads works (colour or
    grayscale, any size: photos larger than :data:`MAX_FACE_SIDE` are scaled
    down, odd sides lose a pixel). Results are cached per process.

    Raises:
        InputError: unreadable image, no face found in it, or an image / face too
            small to draw a mouth on.
    """
    if path is None:
        bgr = cv2.imread(ASTRONAUT_IMAGE, cv2.IMREAD_COLOR)
        if bgr is None:  # pragma: no cover - broken installation
            raise InputError(ASTRONAUT_IMAGE, "the bundled face photo is missing; pass --face-image PATH")
        return _prepare_face(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ASTRONAUT)
    bgr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(path, "cannot read this image")
    rgb = _fit_photo(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if min(rgb.shape[:2]) < 32:
        raise InputError(path, f"the image is too small ({rgb.shape[1]}x{rgb.shape[0]} pixels)")
    from avsr.vision.landmarks import LandmarkDetector

    with LandmarkDetector(static_image_mode=True) as detect:
        landmarks = detect(rgb)
    if landmarks is None:
        raise InputError(path, "no face found in the image")
    lips = np.asarray(landmarks, np.float64)[_OUTER_LIPS]
    if np.linalg.norm(lips[10] - lips[0]) < 16:
        raise InputError(path, f"the face is too small (mouth under 16 pixels wide in the "
                               f"{rgb.shape[1]}x{rgb.shape[0]} frame; crop the photo closer to the face)")
    return _prepare_face(rgb, lips)


def face_scale(face: FacePhoto) -> float:
    """Photo pixels per 96x96-crop pixel around the mouth."""
    return face.half_width / (MOUTH_FRACTION * CROP_SIZE / 2.0)


def render_face(
    track: np.ndarray, style: MouthStyle, face: FacePhoto, nuisance: Nuisance, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Composite the animated mouth onto a face photo, with head motion.

    The mouth is drawn at the photo's own mouth position, size and roll (its
    width scaled by the speaker's ``style.scale``); the whole face then moves
    with the head jitter, so the lip frontend must track it.

    Args:
        track: ``(T, 5)`` viseme parameters per frame.
        style: the speaker's look (the skin comes from the photo).
        face: the prepared photo.
        nuisance: head-motion amplitudes (scaled from crop pixels to photo pixels).
        rng: randomness for the head motion.

    Returns:
        ``(frames, centres)``: ``uint8 (T, H, W, 3)`` RGB frames and ``float64 (T, 2)``
        where the drawn mouth centre is in each frame (pixels).
    """
    hgt, wid = face.image.shape[:2]
    unit = face.half_width * (0.95 + 0.1 * (style.scale - 0.85) / 0.3)
    px_per_crop_px = face_scale(face)
    motion = _head_motion(rng, len(track), nuisance) * np.array([px_per_crop_px, px_per_crop_px, 1.0, 1.0])
    ca, sa = np.cos(face.angle), np.sin(face.angle)
    base = unit * np.array([[ca, -sa], [sa, ca]])
    # region of interest around the mouth, drawn on a copy per frame
    r = int(np.ceil(unit * 2.2))
    x0, y0 = (int(max(0, np.floor(v - r))) for v in face.centre)
    x1, y1 = min(wid, x0 + 2 * r), min(hgt, y0 + 2 * r)
    roi_bg = face.image[y0:y1, x0:x1]
    out = np.empty((len(track), hgt, wid, 3), np.uint8)
    centres = np.tile(face.centre, (len(track), 1))
    for t, shape in enumerate(track):
        geo = mouth_geometry(shape, style)
        centre = geo["landmarks"].mean(axis=0)
        m = np.concatenate([base, (face.centre - np.array([x0, y0]) - base @ centre)[:, None]], 1)
        roi = roi_bg.copy()
        draw_mouth(roi, geo, m, style)
        if face.gray:
            roi[:] = to_gray(roi[None])[0][..., None]
        frame = face.image.copy()
        frame[y0:y1, x0:x1] = roi
        dx, dy, angle, zoom = motion[t]
        if abs(dx) + abs(dy) + abs(angle) + abs(zoom - 1) > 1e-4:
            head = cv2.getRotationMatrix2D((float(face.centre[0]), float(face.centre[1]) - 2 * unit), angle, zoom)
            head[:, 2] += (dx, dy)
            frame = cv2.warpAffine(frame, head, (wid, hgt), borderMode=cv2.BORDER_REFLECT)
            centres[t] = head[:, :2] @ face.centre + head[:, 2]
        out[t] = frame
    return out, centres
