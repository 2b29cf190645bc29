"""SynthGRID is a fair lip-reading task, and its full-face form goes through the lip frontend.

A simple classifier (PCA + logistic regression on mouth crops cut at the
true word times) is trained on training speakers and tested on held-out
test speakers (disjoint voices and looks). Command and colour words must be
read far above chance; the letter slot (25 classes, many visually alike:
b/p, d/t/e/g, ...) must stay clearly harder.
"""

import cv2
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from avsr import cli
from avsr.data.synth import SLOT_NAMES, SLOTS, generate, read_manifest

N_TRAIN, N_TEST = 400, 100
STEPS = 8  # frames per word after temporal resampling


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthgrid")
    train = read_manifest(generate(out, N_TRAIN, "train", seed=0, processes=2, progress=False))
    test = read_manifest(generate(out, N_TEST, "test", seed=0, processes=2, progress=False))
    mouths = {r["id"]: np.load(r["mouths"])["mouths"] for r in train + test}
    return train, test, mouths


def _word_features(mouths: np.ndarray, start: float, end: float, fps: float = 25.0) -> np.ndarray:
    """The word's crops (one frame of context each side), central 64x48 region at 32x24,
    resampled to STEPS frames and normalised: ``(STEPS * 24 * 32,)``."""
    a = max(0, int(np.floor(start * fps)) - 1)
    b = min(len(mouths), max(a + 1, int(np.ceil(end * fps)) + 1))
    seg = np.stack([cv2.resize(f[24:72, 16:80].astype(np.float32), (32, 24), interpolation=cv2.INTER_AREA)
                    for f in mouths[a:b]])
    pos = np.linspace(0, len(seg) - 1, STEPS)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(seg) - 1)
    w = (pos - lo)[:, None, None]
    seq = seg[lo] * (1 - w) + seg[hi] * w
    return ((seq - seq.mean()) / (seq.std() + 1e-6)).ravel()


def _slot_accuracy(corpus, slot: str) -> float:
    train, test, mouths = corpus
    k = SLOT_NAMES.index(slot)

    def xy(rows):
        x = np.stack([_word_features(mouths[r["id"]], r["words"][k][1], r["words"][k][2]) for r in rows])
        return x, np.array([r["words"][k][0] for r in rows])

    (x_tr, y_tr), (x_te, y_te) = xy(train), xy(test)
    clf = make_pipeline(StandardScaler(), PCA(n_components=60, random_state=0),
                        LogisticRegression(C=0.1, max_iter=3000))
    clf.fit(x_tr, y_tr)
    return float(clf.score(x_te, y_te))


def test_splits_share_no_speaker(corpus):
    train, test, _ = corpus
    assert not {r["speaker"] for r in train} & {r["speaker"] for r in test}
    assert not {r["voice"] for r in train} & {r["voice"] for r in test}  # voice+variant groups differ


def test_lips_carry_the_words_but_letters_stay_hard(corpus):
    acc = {slot: _slot_accuracy(corpus, slot) for slot in ("command", "color", "letter")}
    print("held-out speaker accuracy:", acc)
    chance = {slot: 1.0 / len(SLOTS[slot]) for slot in acc}
    assert acc["command"] > 0.55 and acc["color"] > 0.55, acc  # chance 0.25
    assert acc["letter"] < min(acc["command"], acc["color"]) - 0.2, acc
    assert acc["letter"] < 0.5, acc  # 25 classes, many alike on the lips: not trivial
    assert acc["command"] > 2 * chance["command"] and acc["color"] > 2 * chance["color"]


def test_full_face_form_goes_through_the_lip_frontend(tmp_path):
    """The astronaut with the animated mouth (and a mirrored astronaut given as
    ``face_image``, whose mouth is found with mediapipe): face found on >= 99% of
    frames and the frontend's crop centred on the drawn mouth."""
    from skimage import data as skdata

    from avsr.vision import extract_mouths_from_file

    rows = read_manifest(generate(tmp_path / "a", 2, "valid", seed=2, processes=1, full_face=True, progress=False))
    photo = tmp_path / "mirrored.png"
    cv2.imwrite(str(photo), cv2.cvtColor(np.ascontiguousarray(skdata.astronaut()[:, ::-1]), cv2.COLOR_RGB2BGR))
    rows += read_manifest(generate(tmp_path / "b", 1, "valid", seed=3, processes=1, face_image=photo, progress=False))
    found, errors = [], []
    for r in rows:
        assert r["form"] == "face" and r["video"].endswith(".mp4")
        track = extract_mouths_from_file(r["video"])
        truth = np.load(r["mouths"])["mouth_centre"]  # where the mouth was drawn, per frame
        n = min(len(track), len(truth))
        m = track.transforms[:n]
        in_crop = np.einsum("tij,tj->ti", m[:, :, :2], truth[:n]) + m[:, :, 2]
        errors.append(np.linalg.norm(in_crop - (track.mouths.shape[1] - 1) / 2.0, axis=1))
        found.append(track.found)
        assert abs(len(track) - r["num_frames"]) <= 1
    found, errors = np.concatenate(found), np.concatenate(errors)
    assert found.mean() >= 0.99
    assert errors.mean() < 4.0 and errors.max() < 10.0, (errors.mean(), errors.max())  # pixels of a 96 crop
    # and through the command line
    out = tmp_path / "lips.npz"
    assert cli.main(["lips", rows[0]["video"], "-o", str(out)]) == 0
    lips = np.load(out)
    assert lips["mouths"].shape[1:] == (96, 96) and lips["found"].mean() >= 0.99
