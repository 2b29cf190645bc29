"""Tests of the lip-region frontend (avsr.vision): gaps, smoothing, alignment, crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from avsr.errors import InputError
from avsr.vision import (
    LandmarkDetector,
    MouthTrack,
    center_crop,
    detect_landmarks,
    extract_mouths,
    extract_mouths_from_file,
    fill_gaps,
    load_mouths,
    random_crop,
    save_mouths,
    similarity_transform,
    smooth,
)
from avsr.vision.align import (
    LIP_INDICES,
    REFERENCE,
    REFERENCE_POINTS,
    apply_transform,
    similarity_transforms,
)
from avsr.vision.mouth import MouthCropper, warp_mouth
from vision_fixtures import talking_face


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Astronaut face moving, turning and zooming a little: ``uint8 (45, 240, 288, 3)``."""
    return talking_face(45, (288, 240), turn=7, scale=0.62, zoom=0.08, sway=28, bob=14)


@pytest.fixture(scope="module")
def track(frames: np.ndarray) -> MouthTrack:
    return extract_mouths(frames)


def lip_points_in_crop(track: MouthTrack) -> np.ndarray:
    """Lip landmarks mapped into crop pixels by each frame's transform: ``(T, 6, 2)``."""
    return apply_transform(track.transforms, track.landmarks[:, LIP_INDICES])


# --------------------------------------------------------------------- fill_gaps
def test_fill_gaps_interpolates_interior_and_holds_edges() -> None:
    t = np.arange(10, dtype=np.float64)
    x = np.stack([t, 2 * t], axis=-1)[:, None, :].repeat(3, axis=1)  # (10, 3, 2), linear in time
    holes = x.copy()
    holes[[0, 1, 4, 5, 6, 9]] = np.nan
    filled, found = fill_gaps(holes)
    assert found.tolist() == [False, False, True, True, False, False, False, True, True, False]
    np.testing.assert_allclose(filled[2:9], x[2:9])  # interior gap: exact for linear motion
    np.testing.assert_allclose(filled[[0, 1]], x[[2, 2]])  # leading gap holds the first found
    np.testing.assert_allclose(filled[9], x[8])  # trailing gap holds the last found
    assert filled.dtype == holes.dtype and filled.shape == holes.shape


def test_fill_gaps_partial_nan_counts_as_missing_and_all_missing_is_reported() -> None:
    x = np.ones((4, 2, 2), np.float32)
    x[1, 0, 0] = np.nan
    filled, found = fill_gaps(x)
    assert found.tolist() == [True, False, True, True]
    assert np.isfinite(filled).all()
    none, found_none = fill_gaps(np.full((3, 2, 2), np.nan))
    assert not found_none.any() and np.isnan(none).all()


# ------------------------------------------------------------------------ smooth
def test_smooth_keeps_constant_velocity_exactly_also_at_edges() -> None:
    t = np.arange(12, dtype=np.float64)
    x = np.stack([3 * t + 1, -t], axis=-1)[:, None, :]
    np.testing.assert_allclose(smooth(x, window=7), x, atol=1e-12)


def test_smooth_reduces_jitter_and_window_one_is_identity() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5, 2)).astype(np.float32)
    y = smooth(x, window=5)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y[10:-10].std() < 0.6 * x[10:-10].std()  # averaging 5 iid values: std / sqrt(5)
    np.testing.assert_array_equal(smooth(x, window=1), x)
    with pytest.raises(ValueError):
        smooth(x, window=0)


# -------------------------------------------------------------------- similarity
def test_similarity_transform_recovers_rotation_scale_translation_exactly() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(-50, 50, size=(7, 2))
    angle, scale, shift = np.deg2rad(23.0), 1.7, np.array([12.5, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-12)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-10)
    np.testing.assert_allclose(apply_transform(m, src), dst, atol=1e-10)


def test_similarity_is_least_squares_under_noise_and_batched_matches_single() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(-50, 50, size=(4, 9, 2))
    dst = REFERENCE_POINTS[:1].repeat(9, 0) + rng.normal(size=(9, 2))
    batch = similarity_transforms(src, dst)
    for i in range(4):
        single = similarity_transform(src[i], dst)
        np.testing.assert_allclose(batch[i], single)
        residual = ((apply_transform(single, src[i]) - dst) ** 2).sum()
        # OpenCV's affine-partial estimate (no RANSAC) cannot do better
        ref, _ = cv2.estimateAffinePartial2D(src[i], dst, method=cv2.LMEDS)
        assert residual <= ((apply_transform(ref, src[i]) - dst) ** 2).sum() + 1e-9


def test_reference_layout_is_a_symmetric_upright_face() -> None:
    ref = {name: np.array(v[1:]) for name, v in REFERENCE.items()}
    pairs = [
        ("left_eye_outer", "right_eye_outer"),
        ("left_eye_inner", "right_eye_inner"),
        ("mouth_left", "mouth_right"),
    ]
    for left, right in pairs:
        np.testing.assert_allclose(ref[left] * [-1, 1], ref[right])
    assert ref["left_eye_outer"][1] < ref["nose_tip"][1] < ref["mouth_left"][1] < ref["chin"][1]  # y down
    assert ref["right_eye_outer"][0] < ref["right_eye_inner"][0] < 0 < ref["left_eye_inner"][0]


# ------------------------------------------------------------------------- crops
def test_center_and_random_crop() -> None:
    mouths = np.arange(3 * 96 * 96, dtype=np.int64).reshape(3, 96, 96)
    c = center_crop(mouths, 88)
    assert c.shape == (3, 88, 88)
    np.testing.assert_array_equal(c, mouths[:, 4:92, 4:92])
    r = random_crop(mouths, 88, np.random.default_rng(0))
    top, left = np.argwhere(mouths[0] == r[0, 0, 0])[0]
    np.testing.assert_array_equal(r, mouths[:, top : top + 88, left : left + 88])  # same window in every frame
    with pytest.raises(ValueError):
        center_crop(mouths, 97)


def test_warp_mouth_area_reduction_matches_direct_warp_on_smooth_image() -> None:
    yy, xx = np.mgrid[0:1200, 0:1600]
    image = (127 + 100 * np.sin(xx / 90.0) * np.cos(yy / 70.0)).astype(np.uint8)
    m = np.array([[0.2, 0.05, -100.0], [-0.05, 0.2, -80.0]])  # strong shrink: the reduced path
    reduced = warp_mouth(image, m, 96).astype(float)
    direct = cv2.warpAffine(image, m, (96, 96), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(reduced - direct).mean() < 2.0


# -------------------------------------------------------------- mouth cropper
def test_streaming_cropper_equals_whole_track_processing(track: MouthTrack, frames: np.ndarray) -> None:
    landmarks = track.landmarks.copy()
    landmarks[[3, 4, 20, 21, 22, 23, 24, 44]] = np.nan  # gaps, including a trailing one
    def run(**kw: int) -> np.ndarray:
        cropper = MouthCropper(**kw)
        for frame, points in zip(frames, landmarks):
            cropper.push(frame, None if np.isnan(points).any() else points)
        return cropper.finish()

    whole = run(min_flush=10_000)  # everything cropped at the end
    streamed = run(min_flush=1)  # cropped as soon as possible
    np.testing.assert_array_equal(whole.found, ~np.isnan(landmarks).any(axis=(1, 2)))
    np.testing.assert_allclose(streamed.transforms, whole.transforms, atol=1e-3)
    assert np.abs(streamed.mouths.astype(int) - whole.mouths).max() <= 1
    tiny = run(max_buffer_bytes=1, min_flush=1)  # forced flushes: bounded memory, still every frame
    assert tiny.mouths.shape == whole.mouths.shape and np.isfinite(tiny.landmarks).all()
    # forced flushes before any face: those frames have nothing to crop by
    landmarks[:6] = np.nan
    late = run(max_buffer_bytes=1, min_flush=1)
    blank = ~np.isfinite(late.landmarks).all(axis=(1, 2))
    assert 0 < blank.sum() < 6 and blank[0] and not blank[6:].any()
    assert (late.mouths[blank] == 0).all() and (late.mouths[~blank].std(axis=(1, 2)) > 10).all()


# ------------------------------------------------------------- end to end (mediapipe)
def test_mouth_crop_stays_centred_on_the_lips(track: MouthTrack, frames: np.ndarray) -> None:
    assert track.mouths.shape == (len(frames), 96, 96) and track.mouths.dtype == np.uint8
    assert track.found.all() and track.fps == 25.0
    centres = lip_points_in_crop(track).mean(axis=1)  # (T, 2)
    assert np.abs(centres - 47.5).max() < 3.0
    # steady although the face moves by ~50 px (what remains is mostly the
    # 5-frame smoothing rounding off this fast sway)
    assert centres.std(axis=0).max() < 1.5
    # the face really moves in the frames while the crop does not
    assert np.ptp(track.landmarks[:, 13, 0]) > 40
    width = np.linalg.norm(lip_points_in_crop(track)[:, 1] - lip_points_in_crop(track)[:, 0], axis=1)
    assert 35 < width.mean() < 75 and width.std() < 2.0  # mouth width a steady fraction of the crop


def test_frames_without_face_are_flagged_and_interpolated(frames: np.ndarray) -> None:
    gap = slice(18, 24)
    video = frames.copy()
    video[gap] = np.random.default_rng(3).integers(0, 256, video[gap].shape, dtype=np.uint8)
    result = extract_mouths(video)
    expected = np.ones(len(video), bool)
    expected[gap] = False
    np.testing.assert_array_equal(result.found, expected)
    before, after = result.landmarks[17], result.landmarks[24]
    for k, i in enumerate(range(18, 24), start=1):
        np.testing.assert_allclose(result.landmarks[i], before + (after - before) * k / 7, atol=1e-3)
    centres = lip_points_in_crop(result).mean(axis=1)
    assert np.abs(centres[~expected] - 47.5).max() < 6.0  # the lips are where the neighbours were


def test_extract_mouths_resamples_by_timestamp(frames: np.ndarray) -> None:
    video = frames[:30]
    timestamps = np.arange(30) / 30.0  # 1 s at 30 fps -> 25 frames at 25 fps
    result = extract_mouths(video, timestamps, fps=25.0)
    assert len(result) == 25 and result.found.all()
    with pytest.raises(InputError, match="no face"):
        extract_mouths(np.zeros((5, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError):
        extract_mouths(np.zeros((5, 64, 64), np.uint8))


def test_detector_follows_the_larger_face_and_reports_none_without_face() -> None:
    face = data.astronaut()
    canvas = np.full((300, 520, 3), 80, np.uint8)
    big = cv2.resize(face[40:300, 110:340], (200, 226))
    small = cv2.resize(face[40:300, 110:340], (110, 124))
    canvas[40:266, 290:490] = big
    canvas[100:224, 40:150] = small
    with LandmarkDetector() as detect:
        assert detect(np.zeros((120, 160, 3), np.uint8)) is None
        picks = [detect(canvas) for _ in range(3)]
    for points in picks:
        assert points is not None and points.shape == (468, 2) and points.dtype == np.float32
        assert 290 < points[:, 0].mean() < 490  # the larger face, every time
    stack = detect_landmarks([canvas, np.zeros_like(canvas)])
    assert stack.shape == (2, 468, 2) and np.isfinite(stack[0]).all() and np.isnan(stack[1]).all()


def test_detector_keeps_following_its_face_when_another_becomes_more_central() -> None:
    face = cv2.resize(data.astronaut()[40:300, 110:340], (130, 147))
    def frame(a_x: int, b_x: int) -> np.ndarray:
        canvas = np.full((300, 640, 3), 80, np.uint8)
        for x in (a_x, b_x):
            canvas[70:217, x - 65 : x + 65] = face
        return canvas

    with LandmarkDetector() as detect:
        for k in range(10):  # A drifts away from the centre, B towards it
            a_x, b_x = 250 - 12 * k, 430 - 12 * k
            points = detect(frame(a_x, b_x))
            assert points is not None and abs(points[:, 0].mean() - a_x) < 25
        detect.reset()  # a new video: choose afresh, B is now the central one
        points = detect(frame(a_x, b_x))
        assert points is not None and abs(points[:, 0].mean() - b_x) < 25


# ------------------------------------------------------------------------ files
def test_save_and_load_round_trip(tmp_path, track: MouthTrack) -> None:
    path = tmp_path / "sub" / "clip.npz"
    save_mouths(path, track)
    loaded = load_mouths(path)
    np.testing.assert_array_equal(loaded.mouths, track.mouths)
    np.testing.assert_array_equal(loaded.found, track.found)
    assert loaded.fps == 25.0 and loaded.landmarks is None
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.npz"]  # no temporary left behind


def test_load_mouths_rejects_bad_files(tmp_path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_mouths(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(InputError, match="not a readable"):
        load_mouths(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(InputError, match="missing array"):
        load_mouths(other)


def test_extract_mouths_from_file_streams_a_video(tmp_path, frames: np.ndarray) -> None:
    from avsr.io import write_av

    video = tmp_path / "face.mp4"
    write_av(video, frames[:30], 30.0)
    result = extract_mouths_from_file(video)
    assert len(result) == 25 and result.found.all() and result.fps == 25.0
    part = extract_mouths_from_file(video, start=0.4, end=0.8)
    assert len(part) == 10


def test_contact_sheet_marks_interpolated_frames_and_samples_evenly() -> None:
    from avsr.vision.mouth import contact_sheet

    mouths = np.stack([np.full((96, 96), i, np.uint8) for i in range(120)])
    found = np.ones(120, bool)
    found[0] = False
    sheet = contact_sheet(mouths, found, columns=8, max_tiles=16)
    assert sheet.shape == (2 * 100, 8 * 100, 3)
    assert tuple(sheet[0, 50]) == (0, 0, 220)  # first tile: frame 0, no face -> red border
    assert tuple(sheet[0, 150]) == (0, 170, 0)  # second tile: found -> green
    # 16 tiles spread evenly over 120 frames: the last tile shows the last frame
    assert sheet[100 + 60, 7 * 100 + 60, 0] == 119
    with pytest.raises(ValueError):
        contact_sheet(np.zeros((0, 96, 96), np.uint8))
