"""LRS3 and LRS2 splits and the shared command line of their ``prepare.py`` scripts.

* LRS3: ``train`` = ``pretrain`` (cut by word timings) + ``trainval``,
  minus the validation speakers; ``valid`` = the ``trainval`` utterances of
  speakers (TED talks) held out by :func:`avsr.data.lrs.held_out_speakers`
  (their ``pretrain`` clips are dropped as well, so no validation speaker is
  ever trained on); ``test`` = ``test`` (speakers disjoint from the others,
  as the corpus defines it).
* LRS2: the corpus' lists: ``train`` = ``train.txt`` (``main/``) +
  ``pretrain.txt`` (``pretrain/``, cut), ``valid`` = ``val.txt``,
  ``test`` = ``test.txt``.

Each recipe's ``prepare.py`` is a call of :func:`main_lrs3` or :func:`main_lrs2`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from avsr.data.lrs import LRS3_SUBSETS, Clip, held_out_speakers, list_lrs2, list_lrs3
from avsr.errors import InputError, run_reporting
from recipes.common.av_prepare import PrepareSummary, prepare_corpus

__all__ = ["lrs3_splits", "lrs2_splits", "prepare_lrs3", "prepare_lrs2", "main_lrs3", "main_lrs2"]


def _subsets(value: str | Sequence[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(s.strip() for s in items if s.strip())


def lrs3_splits(
    root: str | os.PathLike, *, train_subsets: Sequence[str] = ("pretrain", "trainval"), valid_fraction: float = 0.04,
    seed: int = 0, with_test: bool = True,
) -> tuple[dict[str, list[Clip]], list[tuple[str, str]], set[str]]:
    """The train / valid / test clips of an LRS3 tree.

    Args:
        root: the LRS3 folder (``pretrain/``, ``trainval/``, ``test/``).
        train_subsets: corpus folders that go into ``train`` (``pretrain``, ``trainval``).
        valid_fraction: share of ``trainval`` utterances whose speakers are held out for ``valid``.
        seed: which speakers are held out.
        with_test: list ``test`` too.

    Returns:
        ``(splits, problems, valid_speakers)``.

    Raises:
        InputError: a bad subset name or a corpus folder with the wrong layout.
    """
    unknown = [s for s in train_subsets if s not in ("pretrain", "trainval")]
    if unknown or not train_subsets:
        raise InputError(None, f"train subsets must be pretrain and/or trainval, got {', '.join(train_subsets) or 'none'}")
    wanted = [s for s in LRS3_SUBSETS if s in train_subsets or s == "trainval" or (s == "test" and with_test)]
    clips, problems = list_lrs3(root, wanted)
    valid_speakers = held_out_speakers(clips["trainval"], valid_fraction, seed=seed)
    splits = {
        "train": [c for s in ("pretrain", "trainval") if s in train_subsets for c in clips[s]
                  if c.speaker not in valid_speakers],
        "valid": [c for c in clips["trainval"] if c.speaker in valid_speakers],
    }
    if with_test:
        splits["test"] = clips["test"]
    return splits, problems, valid_speakers


def lrs2_splits(
    root: str | os.PathLike, *, train_subsets: Sequence[str] = ("pretrain", "train"), with_test: bool = True,
) -> tuple[dict[str, list[Clip]], list[tuple[str, str]]]:
    """The train / valid / test clips of an LRS2 tree, as its lists define them.

    Args:
        root: the folder with ``main/`` and ``pretrain/`` (lists in it or its parent).
        train_subsets: lists that go into ``train`` (``pretrain``, ``train``).
        with_test: list ``test`` too.

    Returns:
        ``(splits, problems)``.

    Raises:
        InputError: a bad list name or a corpus folder with the wrong layout.
    """
    unknown = [s for s in train_subsets if s not in ("pretrain", "train")]
    if unknown or not train_subsets:
        raise InputError(None, f"train subsets must be pretrain and/or train, got {', '.join(train_subsets) or 'none'}")
    wanted = [s for s in ("pretrain", "train", "val", "test") if s in train_subsets or s == "val" or (s == "test" and with_test)]
    clips, problems = list_lrs2(root, wanted)
    splits = {"train": [c for s in ("pretrain", "train") if s in train_subsets for c in clips[s]], "valid": clips["val"]}
    if with_test:
        splits["test"] = clips["test"]
    return splits, problems


def _warn_overlap(splits: dict[str, list[Clip]], log: Callable[[str], None]) -> None:
    train = {c.speaker for c in splits["train"]}
    for split in ("valid", "test"):
        shared = train & {c.speaker for c in splits.get(split, [])}
        if shared:
            log(f"warning: {len(shared)} {split} speaker folder(s) also in train, e.g. {sorted(shared)[0]}")


def prepare_lrs3(root: str | os.PathLike, out: str | os.PathLike, *, train_subsets: Sequence[str] = ("pretrain", "trainval"),
                 valid_fraction: float = 0.04, seed: int = 0, with_test: bool = True, log=print, **options) -> PrepareSummary:
    """List LRS3 (:func:`lrs3_splits`) and prepare it (:func:`recipes.common.av_prepare.prepare_corpus` ``options``)."""
    splits, problems, valid_speakers = lrs3_splits(root, train_subsets=train_subsets, valid_fraction=valid_fraction,
                                                  seed=seed, with_test=with_test)
    log(f"LRS3: {len(valid_speakers)} trainval speakers held out for validation")
    _warn_overlap(splits, log)
    return prepare_corpus(splits, out, problems=problems, log=log, **options)


def prepare_lrs2(root: str | os.PathLike, out: str | os.PathLike, *, train_subsets: Sequence[str] = ("pretrain", "train"),
                 with_test: bool = True, log=print, **options) -> PrepareSummary:
    """List LRS2 (:func:`lrs2_splits`) and prepare it (:func:`recipes.common.av_prepare.prepare_corpus` ``options``)."""
    splits, problems = lrs2_splits(root, train_subsets=train_subsets, with_test=with_test)
    _warn_overlap(splits, log)
    return prepare_corpus(splits, out, problems=problems, log=log, **options)


def _parser(description: str, corpus: str, train_default: str, vocab_default: int | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("corpus", help=f"the {corpus} folder")
    p.add_argument("--out", required=True, help="data folder to write (the recipe's data_folder)")
    p.add_argument("--train-subsets", default=train_default, help=f"comma-separated corpus parts for train (default {train_default})")
    p.add_argument("--max-seconds", type=float, default=15.0, help="cut pretrain clips into segments of at most this (default 15)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes for lip extraction and cutting (default 2)")
    if vocab_default is not None:
        p.add_argument("--vocab-size", type=int, default=vocab_default,
                       help=f"sentencepiece unigram vocabulary size (default {vocab_default})")
    p.add_argument("--retry-failed", action="store_true", help="process clips that failed in an earlier run again")
    p.add_argument("--keep-tracks", action="store_true", help="keep the whole-video mouth tracks in OUT/.tracks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _run(name: str, fn: Callable[[], PrepareSummary]) -> int:
    def run() -> None:
        summary = fn()
        if summary.tokenizer is not None:
            print(f"tokenizer: {summary.tokenizer}" + ("" if summary.tokenizer_trained else " (unchanged)"))

    return run_reporting(name, run, interrupted="interrupted (finished clips are kept; run again to resume)")


def main_lrs3(argv: Sequence[str] | None = None, *, description: str, vocab_default: int | None = 5000,
              with_test: bool = True, name: str = "prepare.py") -> int:
    """Command line of the LRS3 ``prepare.py`` scripts (``vocab_default=None``: no tokenizer, e.g. pretraining)."""
    p = _parser(description, "LRS3", "pretrain,trainval", vocab_default)
    p.add_argument("--valid-fraction", type=float, default=0.04,
                   help="share of trainval utterances whose speakers are held out for validation (default 0.04)")
    p.add_argument("--valid-seed", type=int, default=0, help="picks another set of validation speakers")
    args = p.parse_args(argv)
    return _run(name, lambda: prepare_lrs3(
        args.corpus, args.out, train_subsets=_subsets(args.train_subsets), valid_fraction=args.valid_fraction,
        seed=args.valid_seed, with_test=with_test, max_seconds=args.max_seconds, jobs=args.jobs,
        vocab_size=getattr(args, "vocab_size", None), retry_failed=args.retry_failed, keep_tracks=args.keep_tracks,
        progress=not args.quiet, log=lambda m: print(m, file=sys.stderr)))


def main_lrs2(argv: Sequence[str] | None = None, *, description: str, vocab_default: int | None = 5000,
              with_test: bool = True, name: str = "prepare.py") -> int:
    """Command line of the LRS2 ``prepare.py`` script."""
    p = _parser(description, "LRS2 (mvlrs_v1: main/, pretrain/)", "pretrain,train", vocab_default)
    args = p.parse_args(argv)
    return _run(name, lambda: prepare_lrs2(
        args.corpus, args.out, train_subsets=_subsets(args.train_subsets), with_test=with_test,
        max_seconds=args.max_seconds, jobs=args.jobs, vocab_size=getattr(args, "vocab_size", None),
        retry_failed=args.retry_failed, keep_tracks=args.keep_tracks, progress=not args.quiet,
        log=lambda m: print(m, file=sys.stderr)))
