"""English speech to text with CMU PocketSphinx 5, using the model inside the wheel.

The pocketsphinx wheel carries a US-English acoustic model, a general 3-gram language model
and the CMU pronouncing dictionary (``pocketsphinx/model/en-us/``), so this backend works
offline with no configuration. It is English-only: whatever language is spoken, the output is
a sequence of English words (``language_capable=False``), so its text says nothing about the
spoken language.

How the audio is decoded (pocketsphinx 5 API):

- ``pocketsphinx.Endpointer`` (its WebRTC-style voice activity detector) cuts the audio into
  speech regions; each region is one utterance: ``Decoder.start_utt()``,
  ``process_raw(pcm16 bytes, full_utt=True)``, ``end_utt()``. Decoding regions rather than the
  whole recording keeps the language model from stitching words across pauses and gives
  clearly better words on short clips (measured on GRID).
- ``Decoder.seg()`` gives the words with ``start_frame``/``end_frame`` (100 frames/s, the end
  frame inclusive) and ``prob``, the word's posterior probability from the lattice.
- Pronunciation variants ("good(2)") are reduced to the word; fillers and silences
  (``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``, ``[SPEECH]``, ``+NSN+`` ...) are dropped.
"""

from __future__ import annotations

import re

import numpy as np

from pipelines.speech.base import SAMPLE_RATE, WORD_TIMING_NONE, WORD_TIMING_POCKETSPHINX, Transcript, Word

FRAME_RATE = 100  # pocketsphinx feature frames per second (config "frate")
_VARIANT = re.compile(r"\(\d+\)$")


def is_filler(token: str) -> bool:
    """Silence, sentence markers and noise words of the en-us model."""
    return not token or token[0] in "<[+"


def to_pcm16(audio: np.ndarray, sample_rate: int) -> bytes:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (1-D array), got shape {audio.shape}")
    if audio.dtype == np.int16:
        pcm = audio
    else:
        pcm = (np.clip(audio.astype(np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)
    if sample_rate != SAMPLE_RATE:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sample_rate), SAMPLE_RATE)
        pcm = np.clip(resample_poly(pcm.astype(np.float32), SAMPLE_RATE // g, int(sample_rate) // g),
                      -32768, 32767).astype(np.int16)
    return pcm.astype("<i2").tobytes()


def speech_regions(pcm: bytes, vad_mode: int = 0, window: float = 0.3,
                   ratio: float = 0.9) -> list[tuple[float, float, bytes]]:
    """(start_s, end_s, pcm) of each speech region found by pocketsphinx's Endpointer.

    Written out rather than using ``pocketsphinx.Segmenter.segment``, which drops a region
    still open at the end of the stream when the audio length is a multiple of its frame size.
    """
    from pocketsphinx import Endpointer

    endpointer = Endpointer(window=window, ratio=ratio, vad_mode=vad_mode, sample_rate=SAMPLE_RATE)
    size = endpointer.frame_bytes
    regions, current = [], []
    for offset in range(0, len(pcm), size):
        frame = pcm[offset:offset + size]
        if len(frame) < size:
            speech = endpointer.end_stream(frame) if endpointer.in_speech else None
        else:
            speech = endpointer.process(frame)
        if speech is not None:
            current.append(speech)
            if not endpointer.in_speech:
                regions.append((endpointer.speech_start, endpointer.speech_end, b"".join(current)))
                current = []
    if endpointer.in_speech:
        # end_stream(b"") raises IndexError in pocketsphinx 5.1.1: close with one silent sample.
        speech = endpointer.end_stream(b"\x00\x00")
        if speech is not None:
            current.append(speech)
        regions.append((endpointer.speech_start, endpointer.speech_end, b"".join(current)))
    return regions


class PocketsphinxTranscriber:
    """TranscriptionBackend on pocketsphinx 5 with the bundled en-us models (English only)."""

    name = "pocketsphinx:en-us"
    language_capable = False

    def __init__(self, *, segment: bool = True, vad_mode: int = 0, **decoder_options):
        """``segment``: decode each speech region separately (default) or the whole audio as
        one utterance. ``vad_mode``: the Endpointer's aggressiveness, 0 (loose) to 3.
        ``decoder_options``: pocketsphinx Config entries (e.g. ``hmm``, ``lm``, ``dict``,
        ``beam``) to replace the bundled en-us defaults."""
        self.segment = segment
        self.vad_mode = int(vad_mode)
        self.decoder_options = {"loglevel": "FATAL", **decoder_options}

    def decoder(self):
        from pocketsphinx import Decoder

        return Decoder(**self.decoder_options)

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Transcript:
        pcm = to_pcm16(audio, sample_rate)
        duration = len(pcm) / 2 / SAMPLE_RATE
        if self.segment:
            regions = speech_regions(pcm, self.vad_mode)
        else:
            regions = [(0.0, duration, pcm)] if pcm else []
        words: list[Word] = []
        # A fresh decoder per call (about 0.25 s): pocketsphinx adapts its normalisation across
        # utterances, and even with the cepstral mean reset the word confidences drifted, so a
        # clip's result would depend on what was decoded before it. Regions of one call share it.
        decoder = self.decoder()
        for region_start, _, region_pcm in regions:
            if len(region_pcm) < 2 * SAMPLE_RATE // FRAME_RATE:
                continue
            decoder.start_utt()
            decoder.process_raw(region_pcm, full_utt=True)
            decoder.end_utt()
            if decoder.hyp() is None:
                continue
            for seg in decoder.seg():
                if is_filler(seg.word):
                    continue
                start = min(duration, region_start + seg.start_frame / FRAME_RATE)
                end = min(duration, region_start + (seg.end_frame + 1) / FRAME_RATE)
                words.append(Word(_VARIANT.sub("", seg.word), start, max(start, end),
                                  float(np.clip(seg.prob, 0.0, 1.0))))
        return Transcript(" ".join(w.text for w in words), words, self.name, None, None, self.language_capable,
                          WORD_TIMING_POCKETSPHINX if words else WORD_TIMING_NONE)
