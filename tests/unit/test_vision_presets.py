"""Crop presets of the lip frontend, above all ``auto_avsr`` against Auto-AVSR's published crop.

The check of the ``auto_avsr`` geometry: Auto-AVSR
(``mpc001/auto_avsr/preparation/detectors/retinaface/video_process.py``)
warps each frame by the similarity that takes 8 stable landmarks onto their
mean face (``20words_mean_face.npy``, a 256 x 256 frame, no resizing) and cuts
the 96 x 96 window ``[round(c - 48), round(c + 48))`` around ``c``, the mean of
the 20 lip points; landmarks are averaged over +-6 frames and shifted back to
the frame's own centroid. The expected crop positions below are computed here
from those published numbers (the rows of the mean face this test needs are
copied into it), not by the code under test:

* synthetic landmarks placed exactly on the mean face, moved into a frame by a
  known similarity: the mouth centre must land at ``c - round(c - 48)`` =
  (48.31, 47.82), the mouth-corner and eye-corner distances must be the mean
  face's 45.0 and 74.2 px, a dot drawn at the mouth centre must appear there,
  and the pixels must equal their two-step procedure (warp to 256 x 256, then
  slice) redone here with OpenCV;
* the smoothing window: a one-frame rotation moves only frames within 6 of it,
  a jump of the face does not lag;
* a real face (Grace Hopper's portrait as a video, through mediapipe): the
  mesh's lip centre lands within a pixel of 48, its mouth corners within
  3 px of the mean face's (relative to the lip centre), its eye corners within
  8 px, and a rotated, scaled copy of the video gives the same crops.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from matplotlib import cbook
from skimage import data

from avsr import cli
from avsr.errors import InputError
from avsr.vision import PRESETS, extract_mouths, extract_mouths_from_file, get_preset, load_mouths, save_mouths
from avsr.vision.align import apply_transform
from avsr.vision.mouth import CropResult, MouthCropper
from avsr.vision.presets import MEAN_FACE, MESH_TO_68
from vision_fixtures import load_extract_lips

# Rows of 20words_mean_face.npy (x, y in the 256 x 256 reference frame) used here.
PUBLISHED = {
    28: (128.48854473271905, 106.92459505614299),
    33: (128.87017960974802, 137.30253355584708),
    36: (92.52245552947952, 94.36876013925871),
    39: (112.7724172413806, 94.94360869870115),
    42: (145.52511509158018, 94.5349986248377),
    45: (166.67710071343456, 93.56562295717796),
    48: (107.16760614090083, 157.19606764242243),
    49: (114.4761121594912, 152.12006956869445),
    50: (123.84852759001141, 148.5186319927202),
    51: (128.97628287508832, 149.41552526584132),
    52: (134.14360702818732, 148.4262821063011),
    53: (144.17717841903226, 151.7934326195266),
    54: (152.19284005377082, 156.98711116207943),
    55: (143.85966895195557, 164.0034710111701),
    56: (136.7441506983738, 167.94300059697187),
    57: (129.15278277857666, 168.81853365656912),
    58: (121.79511073818607, 168.0227192850946),
    59: (115.27508573225096, 164.1515935501153),
    60: (109.23088653400715, 157.0017210276686),
    61: (122.50270761831963, 154.40733648815748),
    62: (129.02862235738357, 154.1210422747831),
    63: (135.83648069066908, 154.31214997881702),
    64: (150.7578280913324, 156.79506003838384),
    65: (135.66204627207122, 160.62976731508437),
    66: (128.95218547222623, 161.28762709004087),
    67: (122.48775431575005, 160.50878431332862),
}
LIPS = np.array([PUBLISHED[k] for k in range(48, 68)])
LIP_CENTRE = LIPS.mean(axis=0)  # (129.31, 157.82) in the 256 frame
CROP_ORIGIN = np.round(LIP_CENTRE - 48)  # their window's top-left corner: (81, 110)
CENTRE_IN_CROP = LIP_CENTRE - CROP_ORIGIN  # (48.31, 47.82)


def published(k: int) -> np.ndarray:
    return np.array(PUBLISHED[k])


def similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """``(2, 3)`` map reference -> frame: rotate by ``angle`` degrees, scale, then shift."""
    a = np.deg2rad(angle)
    m = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([m, np.array(shift)[:, None]])


def mesh_on_mean_face(to_frame: np.ndarray) -> np.ndarray:
    """``(468, 2)`` mesh landmarks whose 68 mapped points sit exactly on the mean face moved by ``to_frame``."""
    mesh = np.zeros((468, 2))
    points = apply_transform(to_frame, MEAN_FACE)
    mesh[:] = points.mean(axis=0)
    mesh[MESH_TO_68] = points
    return mesh


def crop(frames: list[np.ndarray], landmarks: list[np.ndarray]) -> CropResult:
    """``auto_avsr`` crops of frames with given landmarks (no face detection)."""
    cropper = MouthCropper(preset="auto_avsr")
    for frame, points in zip(frames, landmarks):
        cropper.push(frame, points)
    return cropper.finish()


# ------------------------------------------------------------ published numbers
def test_mean_face_table_is_the_published_one() -> None:
    for k, xy in PUBLISHED.items():
        np.testing.assert_array_equal(MEAN_FACE[k], xy)
    assert MEAN_FACE.shape == (68, 2)
    assert len(set(MESH_TO_68.tolist())) == 68 and MESH_TO_68.max() < 468
    np.testing.assert_allclose(CENTRE_IN_CROP, [48.31, 47.82], atol=0.01)


def test_auto_avsr_crop_position_and_scale_match_their_parameters() -> None:
    to_frame = similarity(angle=17.0, scale=1.8, shift=(300.0, -30.0))
    mesh = mesh_on_mean_face(to_frame)
    frame = np.full((480, 640, 3), 60, np.uint8)
    centre_px = apply_transform(to_frame, LIP_CENTRE[None])[0]
    cv2.circle(frame, tuple(int(v) for v in np.round(centre_px * 16)), 5 * 16, (255, 255, 255), -1, cv2.LINE_AA, 4)
    res = crop([frame] * 20, [mesh] * 20)
    m = res.transforms.astype(np.float64)

    # the lip centre lands where their window puts it, on every frame
    centre = apply_transform(m, mesh[MESH_TO_68[48:68]][None]).mean(axis=1)
    np.testing.assert_allclose(centre, np.broadcast_to(CENTRE_IN_CROP, centre.shape), atol=1e-3)
    # scale: the mean face's own distances, in crop pixels; upright
    corners = apply_transform(m[0], mesh[MESH_TO_68[[48, 54, 36, 45]]])
    mouth_width = np.linalg.norm(published(54) - published(48))  # 45.0 px
    eye_width = np.linalg.norm(published(45) - published(36))  # 74.2 px
    assert np.linalg.norm(corners[1] - corners[0]) == pytest.approx(mouth_width, abs=1e-3)
    assert np.linalg.norm(corners[3] - corners[2]) == pytest.approx(eye_width, abs=1e-3)
    assert np.sqrt(abs(np.linalg.det(m[0, :, :2]))) == pytest.approx(1 / 1.8, rel=1e-5)
    np.testing.assert_allclose(corners[0], published(48) - CROP_ORIGIN, atol=1e-3)
    # the pixels follow: the dot drawn at the lip centre is seen there
    img = res.mouths[0].astype(np.float64) - 60
    ys, xs = np.mgrid[:96, :96]
    seen = np.array([(img * xs).sum(), (img * ys).sum()]) / img.sum()
    np.testing.assert_allclose(seen, CENTRE_IN_CROP, atol=0.15)


def test_auto_avsr_pixels_equal_their_warp_then_slice() -> None:
    """Their procedure redone with OpenCV: gray, warp into the 256 x 256 frame, slice the window."""
    face = cv2.resize(data.astronaut(), (400, 400), interpolation=cv2.INTER_AREA)
    to_frame = similarity(angle=-12.0, scale=0.9, shift=(60.0, 40.0))
    mesh = mesh_on_mean_face(to_frame)
    res = crop([face] * 3, [mesh] * 3)
    to_ref = cv2.invertAffineTransform(to_frame)
    aligned = cv2.warpAffine(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), to_ref, (256, 256), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x0, y0 = CROP_ORIGIN.astype(int)
    theirs = aligned[y0 : y0 + 96, x0 : x0 + 96].astype(int)
    assert np.abs(res.mouths[1].astype(int) - theirs).max() <= 1


# ----------------------------------------------------------------- smoothing
def test_auto_avsr_smooths_rotation_over_13_frames_but_follows_position() -> None:
    n, spike = 30, 12
    frame = np.zeros((300, 400, 3), np.uint8)
    marks = [mesh_on_mean_face(similarity(0.0, 1.0, (20.0 + (40.0 if t >= 20 else 0.0), 10.0))) for t in range(n)]
    base = crop([frame] * n, marks).transforms.astype(np.float64)
    # a jump of the face at frame 20: no lag, the crop stays on the lips on every frame
    centre = np.stack([apply_transform(base[t], marks[t][MESH_TO_68[48:68]]).mean(axis=0) for t in range(n)])
    np.testing.assert_allclose(centre, np.broadcast_to(CENTRE_IN_CROP, centre.shape), atol=1e-3)
    # one frame turned by 13 degrees: frames within +-6 see 1/13 of it (at most), the others nothing
    pivot = marks[spike][MESH_TO_68].mean(axis=0)
    turn = cv2.getRotationMatrix2D(tuple(pivot), -13.0, 1.0)  # OpenCV: positive = counter-clockwise
    marks[spike] = apply_transform(turn, marks[spike])
    turned = crop([frame] * n, marks).transforms.astype(np.float64)
    def angles(m: np.ndarray) -> np.ndarray:
        return np.degrees(np.arctan2(m[:, 1, 0], m[:, 0, 0]))

    angle = angles(turned) - angles(base)
    near = np.abs(np.arange(n) - spike) <= 6
    assert np.abs(angle[~near]).max() < 1e-6
    others = near & (np.arange(n) != spike)
    assert np.all(np.abs(np.abs(angle[others]) - 1.0) < 0.05)  # 13 degrees / 13 frames
    assert abs(angle[spike]) < 1.05  # smoothing steadies the turned frame too


# ------------------------------------------------------------- a real face
def hopper() -> np.ndarray:
    """Grace Hopper's portrait (matplotlib's sample data), RGB ``(600, 512, 3)``: a frontal, neutral face."""
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """The portrait drifting by a few pixels: ``uint8 (8, 600, 512, 3)``."""
    face = hopper()
    return np.stack([cv2.warpAffine(face, np.array([[1.0, 0, 3 * np.sin(i)], [0, 1.0, 2 * np.cos(i)]]), (512, 600),
                                    borderMode=cv2.BORDER_REFLECT) for i in range(8)])


@pytest.fixture(scope="module")
def portrait_track(portrait: np.ndarray, tmp_path_factory):
    """``auto_avsr`` crops of the portrait, through a video file."""
    from avsr.io import write_av

    path = tmp_path_factory.mktemp("presets") / "hopper.mp4"
    write_av(path, portrait, 25.0)
    return extract_mouths_from_file(path, preset="auto_avsr")


def test_auto_avsr_on_a_real_face_cuts_the_mouth_where_their_crop_does(portrait_track) -> None:
    t = portrait_track
    assert t.preset == "auto_avsr" and t.mouths.shape == (8, 96, 96) and t.mouths.dtype == np.uint8 and t.found.all()
    in_crop = apply_transform(t.transforms, t.landmarks[:, MESH_TO_68])  # (T, 68, 2) crop pixels
    # position: their window starts at round(c - 48), so the lip centre c of the smoothed points lands
    # within half a pixel of 48; the frame's own (unsmoothed) points within a pixel
    centre = in_crop[:, 48:68].mean(axis=1)
    assert np.abs(centre - 48.0).max() <= 1.0
    # shape and scale: the mesh's mouth corners sit where the mean face has them, relative to the
    # lip centre, within a few pixels; the eye corners (outside the crop) a little further
    for k, tol in ((48, 3.0), (54, 3.0), (36, 8.0), (39, 8.0), (42, 8.0), (45, 8.0)):
        expected = published(k) - LIP_CENTRE
        assert np.abs(in_crop[:, k] - centre - expected).max() < tol, k
    width = np.linalg.norm(in_crop[:, 54] - in_crop[:, 48], axis=1)
    assert np.abs(width / np.linalg.norm(published(54) - published(48)) - 1).max() < 0.10  # measured: 4-7 % wider
    assert 30 < t.mouths.mean() < 220 and t.mouths.std() > 20  # a picture, not black or blank


def test_auto_avsr_crop_ignores_rotation_and_scale_of_the_input(portrait: np.ndarray) -> None:
    frames = portrait
    turn = cv2.getRotationMatrix2D((256.0, 300.0), 18.0, 0.75)
    moved = np.stack([cv2.warpAffine(f, turn, (512, 600), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                      for f in frames])
    a, b = extract_mouths(frames, preset="auto_avsr"), extract_mouths(moved, preset="auto_avsr")
    # the same points of the face (the lips of the upright copy, moved along) land on the same crop
    # pixels, up to the mesh's own jitter and their whole-pixel window (measured: 1.7 px at most,
    # 0.5 px on average)
    lips = a.landmarks[:, MESH_TO_68[48:68]]
    in_a = apply_transform(a.transforms, lips)
    in_b = apply_transform(b.transforms, apply_transform(turn, lips))
    assert np.abs(in_a - in_b).max() < 2.5 and np.abs(in_a - in_b).mean() < 1.0
    unaligned = apply_transform(a.transforms, apply_transform(turn, lips))  # what the turn alone would do
    assert np.abs(in_a - unaligned).max() > 10.0
    # and the pictures agree (this wrinkled face changes a lot with a pixel's shift: compare them
    # blurred; measured 4 gray levels, against 15 for the same crop moved by 4 px)
    def blur(x: np.ndarray) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(m.astype(np.float64), (0, 0), 2.0) for m in x])

    assert np.abs(blur(a.mouths) - blur(b.mouths)).mean() < 7.0


def test_auto_avsr_streamed_equals_whole_track(portrait: np.ndarray, portrait_track) -> None:
    frames = np.concatenate([portrait, portrait[::-1], portrait])  # 24 frames: longer than the 13-frame window
    marks = np.concatenate([portrait_track.landmarks, portrait_track.landmarks[::-1], portrait_track.landmarks])
    marks[[2, 3, 11, 23]] = np.nan  # gaps, one at the end

    def run(min_flush: int) -> CropResult:
        cropper = MouthCropper(preset="auto_avsr", min_flush=min_flush)
        for frame, points in zip(frames, marks):
            cropper.push(frame, None if np.isnan(points).any() else points)
        return cropper.finish()

    whole, streamed = run(10_000), run(1)
    np.testing.assert_allclose(streamed.transforms, whole.transforms, atol=1e-3)
    assert np.abs(streamed.mouths.astype(int) - whole.mouths).max() <= 1


# --------------------------------------------------------------- API surface
def test_unknown_preset_is_one_clear_error(tmp_path, capsys) -> None:
    with pytest.raises(InputError, match=r"unknown crop preset 'lrs3'; choose from: avsr, auto_avsr"):
        get_preset("lrs3")
    with pytest.raises(InputError, match="unknown crop preset"):
        extract_mouths(np.zeros((2, 32, 32, 3), np.uint8), preset="lrs3")
    with pytest.raises(InputError, match="unknown crop preset"):  # before the (missing) file is opened
        extract_mouths_from_file(tmp_path / "missing.mp4", preset="lrs3")
    assert cli.main(["lips", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "x.npz"), "--preset", "lrs3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["avsr lips: error: unknown crop preset 'lrs3'; choose from: avsr, auto_avsr"]
    tool = load_extract_lips()
    assert tool.main([str(tmp_path), "-o", str(tmp_path / "out"), "--preset", "lrs3"]) == 2
    assert capsys.readouterr().err.strip() == f"extract_lips: error: {err[0].split(': ', 2)[2]}"
    assert sorted(PRESETS) == ["auto_avsr", "avsr"] and get_preset(None).name == "avsr"
    with pytest.raises(ValueError, match="mouth_fraction"):
        MouthCropper(preset="auto_avsr", mouth_fraction=0.5)


def test_preset_is_saved_and_old_files_load_as_avsr(tmp_path, portrait_track) -> None:
    path = tmp_path / "t.npz"
    save_mouths(path, portrait_track)
    assert load_mouths(path).preset == "auto_avsr"
    np.savez(tmp_path / "old.npz", mouths=portrait_track.mouths, found=portrait_track.found, fps=np.float64(25.0))
    assert load_mouths(tmp_path / "old.npz").preset == "avsr"
    tool = load_extract_lips()
    assert tool.is_done(str(path), "auto_avsr") and not tool.is_done(str(path), "avsr")
    assert tool.is_done(str(tmp_path / "old.npz"), "avsr") and tool.is_done(str(path))
