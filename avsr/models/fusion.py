"""Audio-visual fusion at 25 fps, with modality dropout.

Choice of fusion: **concatenation + linear projection** (+ LayerNorm).
Both streams are already aligned step by step (one step per video frame),
so a per-step operator suffices; cross-modal interactions over time are
left to the conformer's self-attention, which sees the fused stream.
Concatenation keeps the two modalities in separate input dimensions, so
the projection can learn how much to trust each one, and a missing
modality is simply a block of zeros: the same input the model sees under
modality dropout, which is what lets one model serve AV, audio-only and
video-only decoding. AV-HuBERT compared concatenation with summation and
kept concatenation; cross-attention fusion adds parameters and cost
without a clear gain at this scale.

Two more modes serve imported models: ``"mlp"`` is Auto-AVSR's late fusion
(an MLP with batch norm over the concatenated outputs of two per-stream
conformers) and ``"none"`` passes the one stream of a single-modality
model through unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avsr.audio.features import zero_after

__all__ = ["FUSION_MODES", "align_lengths", "fused_lengths", "ModalityDropout", "AVFusion"]

FUSION_MODES = ("concat", "mlp", "none")
"""``concat``: linear + LayerNorm; ``mlp``: Linear-BatchNorm-ReLU-Linear; ``none``: one stream, as is."""


def align_lengths(x: Tensor, lengths: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Trim or zero-pad a (B, T, D) stream to ``steps`` steps.

    Args:
        x: (B, T, D) features.
        lengths: (B,) valid steps.
        steps: target number of steps.

    Returns:
        (B, steps, D) features, zero past the returned lengths, and (B,)
        lengths clamped to ``steps``.
    """
    t = x.size(1)
    if t >= steps:
        x = x[:, :steps]
    else:
        x = nn.functional.pad(x, (0, 0, 0, steps - t))
    lengths = lengths.clamp(max=steps)
    return zero_after(x, lengths), lengths


def fused_lengths(audio_lengths: Tensor | None, video_lengths: Tensor | None) -> Tensor:
    """Per-utterance length of the fused stream.

    With both modalities an utterance keeps the shorter of its two streams
    (they differ by at most a step when audio and video cover the same
    time: ``ceil(N / 640)`` audio steps vs. ``T`` frames). An utterance whose
    stream in one modality has length 0 takes the other modality's length.

    Args:
        audio_lengths: (B,) audio steps at 25 fps, or ``None``.
        video_lengths: (B,) video frames, or ``None``.

    Returns:
        (B,) fused lengths.
    """
    if audio_lengths is None and video_lengths is None:
        raise ValueError("at least one modality is needed")
    if audio_lengths is None:
        return video_lengths  # type: ignore[return-value]
    if video_lengths is None:
        return audio_lengths
    both = torch.minimum(audio_lengths, video_lengths)
    return torch.where(
        audio_lengths == 0, video_lengths, torch.where(video_lengths == 0, audio_lengths, both)
    )


class ModalityDropout(nn.Module):
    """Drop audio or video per utterance during training (never both).

    Each utterance draws one uniform number ``u``: ``u < audio_drop_prob``
    drops its audio, ``audio_drop_prob <= u < audio_drop_prob +
    video_drop_prob`` drops its video, otherwise both are kept. Dropping
    zeroes the modality's features, exactly like a missing modality at
    inference. Inactive in evaluation mode.

    Args:
        audio_drop_prob: probability of dropping the audio of an utterance.
        video_drop_prob: probability of dropping the video of an utterance.
    """

    def __init__(self, audio_drop_prob: float = 0.0, video_drop_prob: float = 0.0) -> None:
        super().__init__()
        if min(audio_drop_prob, video_drop_prob) < 0 or audio_drop_prob + video_drop_prob > 1:
            raise ValueError("drop probabilities must be >= 0 and sum to at most 1")
        self.audio_drop_prob = audio_drop_prob
        self.video_drop_prob = video_drop_prob

    def sample(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Draw which modalities each utterance keeps.

        Args:
            batch: number of utterances.
            device: device of the returned masks.

        Returns:
            keep_audio, keep_video: (B,) bool, never both False.
        """
        u = torch.rand(batch, device=device)
        drop_audio = u < self.audio_drop_prob
        drop_video = (u >= self.audio_drop_prob) & (u < self.audio_drop_prob + self.video_drop_prob)
        return ~drop_audio, ~drop_video

    def forward(
        self,
        audio: Tensor,
        video: Tensor,
        audio_present: Tensor | None = None,
        video_present: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Apply to two aligned streams.

        Args:
            audio: (B, T, Da) audio features.
            video: (B, T, Dv) video features.
            audio_present: (B,) bool, utterances that have audio (default all);
                their video is never dropped where the audio is missing, and
                vice versa.
            video_present: (B,) bool, utterances that have video (default all).

        Returns:
            audio, video (zeroed where dropped), keep_audio (B,), keep_video (B,).
        """
        ones = torch.ones(audio.size(0), dtype=torch.bool, device=audio.device)
        if not self.training:
            return audio, video, ones, ones
        keep_a, keep_v = self.sample(audio.size(0), audio.device)
        keep_a = keep_a | ~(ones if video_present is None else video_present)
        keep_v = keep_v | ~(ones if audio_present is None else audio_present)
        audio = audio * keep_a.view(-1, 1, 1).to(audio.dtype)
        video = video * keep_v.view(-1, 1, 1).to(video.dtype)
        return audio, video, keep_a, keep_v


class AVFusion(nn.Module):
    """Align, (modality-)drop, concatenate and project the two streams.

    Args:
        d_audio: audio feature dimension.
        d_video: video feature dimension.
        d_model: output dimension.
        audio_drop_prob: modality dropout, probability of dropping audio.
        video_drop_prob: modality dropout, probability of dropping video.
        dropout: dropout after the projection.
        mode: one of :data:`FUSION_MODES`. ``"concat"``: ``LayerNorm(W [a; v])``;
            ``"mlp"``: ``W2 ReLU(BN(W1 [a; v]))`` (Auto-AVSR's ``MLPHead``;
            note the order: audio first, then video); ``"none"``: the one
            stream given is returned as it is (needs ``d_audio == d_video ==
            d_model``).
        hidden: hidden width of the ``"mlp"`` mode.

    Example:
        >>> fusion = AVFusion(8, 6, 16).eval()
        >>> x, n = fusion(torch.ones(2, 5, 8), torch.tensor([5, 3]), None, None)
        >>> tuple(x.shape), n.tolist()
        ((2, 5, 16), [5, 3])
    """

    def __init__(
        self,
        d_audio: int,
        d_video: int,
        d_model: int,
        audio_drop_prob: float = 0.0,
        video_drop_prob: float = 0.0,
        dropout: float = 0.0,
        mode: str = "concat",
        hidden: int = 8192,
    ) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {mode!r}")
        if mode == "none" and not d_audio == d_video == d_model:
            raise ValueError("fusion mode 'none' needs equal audio, video and model widths")
        self.d_audio = d_audio
        self.d_video = d_video
        self.mode = mode
        self.modality_dropout = ModalityDropout(audio_drop_prob, video_drop_prob)
        if mode == "concat":
            self.proj = nn.Linear(d_audio + d_video, d_model)
            self.norm = nn.LayerNorm(d_model)
        elif mode == "mlp":
            self.fc1 = nn.Linear(d_audio + d_video, hidden)
            self.bn1 = nn.BatchNorm1d(hidden)
            self.fc2 = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def _project(self, x: Tensor) -> Tensor:
        """(B, T, d_audio + d_video) -> (B, T, d_model)."""
        if self.mode == "concat":
            return self.norm(self.proj(x))
        h = self.bn1(self.fc1(x).transpose(1, 2)).transpose(1, 2)
        return self.fc2(nn.functional.relu(h))

    def forward(
        self,
        audio: Tensor | None,
        audio_lengths: Tensor | None,
        video: Tensor | None,
        video_lengths: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Fuse.

        Args:
            audio: (B, Ta, d_audio) audio features at 25 fps, or ``None``.
            audio_lengths: (B,) valid audio steps (required with ``audio``).
            video: (B, Tv, d_video) video features at 25 fps, or ``None``.
            video_lengths: (B,) valid video steps (required with ``video``).

        Returns:
            fused: (B, T, d_model), zero past ``lengths``; ``T = max(lengths)``.
            lengths: (B,) see :func:`fused_lengths`.
        """
        both = audio is not None and video is not None
        lengths = fused_lengths(
            audio_lengths if audio is not None else None, video_lengths if video is not None else None
        )
        if self.mode == "none":
            if both:
                raise ValueError("fusion mode 'none' takes one stream, got audio and video")
            one = audio if audio is not None else video
            assert one is not None
            return self.dropout(zero_after(one, lengths)), lengths
        steps = int(lengths.max().item())
        ref = audio if audio is not None else video
        assert ref is not None
        if audio is None:
            audio = ref.new_zeros(ref.size(0), steps, self.d_audio)
        else:
            audio, _ = align_lengths(audio, lengths, steps)
        if video is None:
            video = ref.new_zeros(ref.size(0), steps, self.d_video)
        else:
            video, _ = align_lengths(video, lengths, steps)
        if both:
            assert audio_lengths is not None and video_lengths is not None
            audio, video, _, _ = self.modality_dropout(
                audio, video, audio_lengths > 0, video_lengths > 0
            )
        fused = self._project(torch.cat([audio, video], dim=-1))
        return self.dropout(zero_after(fused, lengths)), lengths
