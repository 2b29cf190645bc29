"""Minimal ctypes binding to libespeak-ng with phoneme events.

eSpeak NG synthesises 22,050 Hz speech and, when initialised with
``espeakINITIALIZE_PHONEME_EVENTS``, reports each phoneme's mnemonic and its
audio position in milliseconds. :class:`Espeak` wraps that into one call,
:meth:`Espeak.synth`, returning the waveform and a list of events.

libespeak-ng keeps global state and is not thread-safe: use one engine per
process (:func:`get_engine` caches it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import pickle
import signal
from dataclasses import dataclass

import numpy as np

from avsr.errors import InputError

# speak_lib.h constants
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
espeakINITIALIZE_PHONEME_EVENTS = 0x0001
espeakINITIALIZE_DONT_EXIT = 0x8000
espeakCHARS_UTF8 = 1
espeakPHONEMES = 0x100
espeakRATE = 1
espeakVOLUME = 2
espeakPITCH = 3
espeakRANGE = 4
espeakWORDGAP = 7
EE_OK = 0

EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_SENTENCE = 2
EVENT_END = 5
EVENT_PHONEME = 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Event:
    """One synthesis event.

    Attributes:
        kind: ``"word"`` or ``"phoneme"``.
        time: start in seconds from the beginning of the waveform.
        text_position: 1-based character position in the input (words).
        length: number of characters of the word (words).
        phoneme: eSpeak phoneme mnemonic (phonemes), else ``""``.
    """

    kind: str
    time: float
    text_position: int = 0
    length: int = 0
    phoneme: str = ""


def resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase-resample a waveform (e.g. eSpeak's 22,050 Hz output) to another rate.

    Args:
        wav: ``(N,)`` waveform at ``rate`` Hz.
        rate: its sample rate.
        target: the wanted sample rate.

    Returns:
        ``float64 (M,)`` at ``target`` Hz, ``M = ceil(N * target / rate)``.

    Example:
        >>> resample(np.zeros(22050, np.float32), 22050, 16000).shape
        (16000,)
    """
    x = np.asarray(wav, np.float64)
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g)


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError as e:  # pragma: no cover - depends on the system
        raise InputError(None, f"cannot load libespeak-ng ({e}); install the espeak-ng package") from e


class Espeak:
    """One eSpeak NG engine (one per process).

    Example:
        >>> eng = get_engine()
        >>> wav, events = eng.synth_isolated("bin blue", voice="en")
        >>> wav.dtype, len(wav) > 1000
        (dtype('float32'), True)
        >>> [e.phoneme for e in events if e.kind == "phoneme"][:3]
        ['b', 'I', 'n']
    """

    def __init__(self) -> None:
        lib = _load_library()
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 200, None, espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_DONT_EXIT
        )
        if rate <= 0:  # pragma: no cover
            raise InputError(None, "libespeak-ng failed to initialise (is espeak-ng-data installed?)")
        self.sample_rate = int(rate)
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        self._events: list[Event] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: called from C
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None
        # eSpeak draws its small random variations from libc rand(): seeding it
        # before each utterance makes the waveform reproducible.
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        self._libc.srand.argtypes = [ctypes.c_uint]

    def _on_audio(
        self, wav: "ctypes._Pointer[ctypes.c_short]", numsamples: int, events: "ctypes._Pointer[_Event]"
    ) -> int:
        """``t_espeak_callback``: collect samples and events; 0 = keep synthesising."""
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while True:
            ev = events[i]
            if ev.type == EVENT_LIST_TERMINATED:
                break
            t = ev.audio_position / 1000.0
            if ev.type == EVENT_WORD:
                self._events.append(Event("word", t, ev.text_position, ev.length))
            elif ev.type == EVENT_PHONEME:
                raw = bytes(ev.id.string).split(b"\0", 1)[0]
                self._events.append(Event("phoneme", t, phoneme=raw.decode("latin-1")))
            elif ev.type in (EVENT_END, EVENT_SENTENCE):
                self._events.append(Event("end" if ev.type == EVENT_END else "sentence", t, ev.text_position))
            i += 1
        return 0

    def set_voice(self, voice: str) -> None:
        """Select a voice by name, e.g. ``"en"``, ``"en-us"`` or ``"en+f3"`` (voice + variant).

        Raises:
            InputError: the voice is unknown to eSpeak NG.
        """
        if voice == self._voice:
            return
        if self._lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            raise InputError(None, f"unknown espeak-ng voice {voice!r} (see `espeak-ng --voices`)")
        self._voice = voice

    def synth(
        self, text: str, voice: str = "en", rate: int = 175, pitch: int = 50, pitch_range: int = 50,
        word_gap: int = 0, seed: int = 0,
    ) -> tuple[np.ndarray, list[Event]]:
        """Synthesise ``text`` (``[[...]]`` segments are read as eSpeak phonemes).

        eSpeak carries some state from one call to the next, so the exact
        waveform depends on what this engine said before; use
        :meth:`synth_isolated` for results that depend on the arguments only.

        Args:
            text: the utterance.
            voice: eSpeak voice name, optionally with ``+variant``.
            rate: words per minute (80..450).
            pitch: base pitch 0..99.
            pitch_range: pitch range 0..99.
            word_gap: extra pause between words, units of 10 ms.
            seed: seeds eSpeak's random variation (same seed, same waveform).

        Returns:
            ``(wav, events)``: wav float32 ``(N,)`` in [-1, 1] at :attr:`sample_rate`,
            and the word / phoneme events in time order.
        """
        self.set_voice(voice)
        lib = self._lib
        lib.espeak_SetParameter(espeakRATE, int(rate), 0)
        lib.espeak_SetParameter(espeakPITCH, int(pitch), 0)
        lib.espeak_SetParameter(espeakRANGE, int(pitch_range), 0)
        lib.espeak_SetParameter(espeakWORDGAP, int(word_gap), 0)
        lib.espeak_SetParameter(espeakVOLUME, 100, 0)
        self._chunks, self._events = [], []
        self._libc.srand(int(seed) & 0xFFFFFFFF)
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        uid = ctypes.c_uint(0)
        err = lib.espeak_Synth(
            buf, len(data), 0, POS_CHARACTER, 0, espeakCHARS_UTF8 | espeakPHONEMES, ctypes.byref(uid), None
        )
        if err != EE_OK:  # pragma: no cover
            raise InputError(None, f"espeak_Synth failed with code {err} for {text!r}")
        wav = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        events = sorted(self._events, key=lambda e: e.time)
        return (wav.astype(np.float32) / 32768.0), events

    def synth_isolated(self, text: str, **kwargs: str | int) -> tuple[np.ndarray, list[Event]]:
        """:meth:`synth` in a forked child, so the result depends on the arguments only.

        eSpeak's waveform generator carries state (pitch phase, buffers) from one
        utterance into the next, so the same text comes out a few samples
        different depending on what was said before. A child forked from an
        engine that has not spoken yet always starts from the same state,
        which makes generation reproducible whatever the order of jobs.
        Falls back to :meth:`synth` where ``fork`` is unavailable.
        """
        if not hasattr(os, "fork"):  # pragma: no cover - non-POSIX
            return self.synth(text, **kwargs)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: synthesise, send, exit without cleanup handlers
            # Whatever happens here (Ctrl-C, a closed pipe), the child must end in os._exit:
            # an exception escaping it would run the rest of the parent's program a second time.
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
                os.close(read_fd)
                try:
                    payload = pickle.dumps(("ok", self.synth(text, **kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
                    code = 0
                except InputError as e:
                    payload = pickle.dumps(("input", (e.path, e.problem)))
                except BaseException as e:  # noqa: BLE001 - forwarded to the parent
                    payload = pickle.dumps(("other", f"{type(e).__name__}: {e}"))
                with os.fdopen(write_fd, "wb") as f:
                    f.write(payload)
            finally:
                os._exit(code)
        os.close(write_fd)
        try:
            with os.fdopen(read_fd, "rb") as f:
                payload = f.read()
        finally:  # reap the child even when interrupted (it ends by itself: it ignores Ctrl-C)
            _, status = os.waitpid(pid, 0)
        if not payload:
            raise RuntimeError(f"espeak child process died (status {status}) on {text!r}")
        # trusted bytes: written by our own forked child into a private pipe (never a file)
        kind, result = pickle.loads(payload)
        if kind == "input":
            raise InputError(*result)
        if kind == "other":
            raise RuntimeError(f"espeak failed on {text!r}: {result}")
        return result


_ENGINE: tuple[int, Espeak] | None = None


def get_engine() -> Espeak:
    """The process's eSpeak engine (created on first use, re-created after a fork)."""
    global _ENGINE
    if _ENGINE is None or _ENGINE[0] != os.getpid():
        _ENGINE = (os.getpid(), Espeak())
    return _ENGINE[1]
