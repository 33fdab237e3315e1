"""The pseudoword inventory of Alper & Averbuch-Elor (*Kiki or Bouba?*, NeurIPS 2023).

Words have the shape ``c1 v1 c2 v2 c1 v1`` (three CV syllables, the first repeated) and are
kept only when every sound in them is sharp or neutral (a *sharp* word) or every sound is
round or neutral (a *round* word). With the paper's letters this gives 324 + 324 = 648 words.
The reference words (kiki, bouba) are added with ``is_reference = True``.

Every word also gets two transcriptions: a plain IPA one (letters map to themselves, so the
words read like Spanish or Italian) and an espeak phoneme string in ``[[...]]`` that forces
that reading; espeak's English letter-to-sound rules would otherwise say *bouba* as /baʊbə/.
:func:`tts_ipa` writes the espeak string in IPA, as espeak-ng itself reports it (e.g.
``bˈuːbɑː``): that is the phoneme input of IPA-reading engines such as piper, so every
engine is given the same phonemes.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from avprobe.io import write_parquet

log = logging.getLogger(__name__)

#: Spellings that stand for one sound. Only the reference word *bouba* needs one:
#: "ou" is English spelling for /u/.
DIGRAPHS = {"ou": "u"}

#: Letter → IPA. Every letter is its own IPA symbol except g (IPA uses the single-storey ɡ).
LETTER_IPA = {
    **{c: c for c in "bdktpslhmnx"},
    "g": "ɡ",
    **{v: v for v in "aeiou"},
}

#: Letter → espeak-ng phoneme mnemonic (English phoneme table). English has no short pure
#: /e/ or /o/ in stressed open syllables, so e and o use the closest English vowels /eɪ/ and
#: /oʊ/; a, i and u use the long vowels /ɑː iː uː/. x is the velar fricative /x/ (as in
#: *loch*), which the English voices can say through espeak's base phoneme table.
LETTER_ESPEAK = {
    **{c: c for c in "bdgktpslhmnx"},
    "a": "A:",
    "e": "eI",
    "i": "i:",
    "o": "oU",
    "u": "u:",
}

#: Letter → the IPA that espeak-ng reports for LETTER_ESPEAK's mnemonic (checked against
#: espeak's own phoneme events by the tests). Piper voices are trained on these symbols.
LETTER_TTS_IPA = {
    **{c: c for c in "bdktpslhmnx"},
    "g": "ɡ",
    "a": "ɑː",
    "e": "eɪ",
    "i": "iː",
    "o": "oʊ",
    "u": "uː",
}

VOWEL_LETTERS = frozenset("aeiou")

INVENTORY_COLUMNS = (
    "word",
    "label",
    "is_reference",
    "n_sharp",
    "n_round",
    "n_neutral",
    "sharpness",
    "ipa",
    "espeak",
)


def segment(word: str) -> list[str]:
    """Split a spelled word into its sounds, each named by one letter (``bouba`` → b u b a)."""
    sounds = []
    i = 0
    while i < len(word):
        for spelling, sound in DIGRAPHS.items():
            if word.startswith(spelling, i):
                sounds.append(sound)
                i += len(spelling)
                break
        else:
            if word[i] not in LETTER_IPA:
                raise ValueError(f"{word!r}: no sound is defined for the letter {word[i]!r}")
            sounds.append(word[i])
            i += 1
    return sounds


def sound_class(sound: str, cfg: Mapping) -> str:
    """``sharp``, ``round`` or ``neutral`` for one sound, from the config's sound lists."""
    if sound in cfg["sharp_sounds"]:
        return "sharp"
    if sound in cfg["round_sounds"]:
        return "round"
    return "neutral"


def ipa_transcription(word: str) -> str:
    """Plain IPA of a word, without slashes (``bouba`` → ``buba``)."""
    return "".join(LETTER_IPA[s] for s in segment(word))


def espeak_phonemes(word: str) -> str:
    """espeak-ng phoneme input for a word, stressed on its first syllable: ``[[b'u:bA:]]``.

    The stress mark goes before the first vowel, which is where espeak itself writes it.
    A fixed stress keeps prosody constant across the inventory, so it cannot cue the label.
    """
    return "[[" + _stressed_transcription(word, LETTER_ESPEAK, "'") + "]]"


def tts_ipa(word: str) -> str:
    """The phonemes of :func:`espeak_phonemes` in IPA, stress mark where espeak writes it:
    ``bouba`` → ``bˈuːbɑː``. The input of IPA engines (piper) is ``[[`` + this + ``]]``."""
    return _stressed_transcription(word, LETTER_TTS_IPA, "ˈ")


def _stressed_transcription(word: str, symbols: Mapping[str, str], stress: str) -> str:
    """``word``'s sounds in ``symbols``, with ``stress`` before the first vowel."""
    parts = []
    stressed = False
    for sound in segment(word):
        if sound in VOWEL_LETTERS and not stressed:
            parts.append(stress)
            stressed = True
        parts.append(symbols[sound])
    return "".join(parts)


def word_features(word: str, cfg: Mapping) -> dict:
    """Counts of sharp/round/neutral sounds, the sharp/round label (None if mixed), the
    weighted sharpness and both transcriptions of one word."""
    classes = [sound_class(s, cfg) for s in segment(word)]
    counts = {c: classes.count(c) for c in ("sharp", "round", "neutral")}
    weights = cfg["sharpness_weights"]
    # Normalised by the number of sounds so that words of any length are comparable.
    sharpness = sum(float(weights[c]) * n for c, n in counts.items()) / len(classes)
    if counts["round"] == 0 and counts["sharp"] > 0:
        label = "sharp"
    elif counts["sharp"] == 0 and counts["round"] > 0:
        label = "round"
    else:
        label = None
    return {
        "word": word,
        "label": label,
        "n_sharp": counts["sharp"],
        "n_round": counts["round"],
        "n_neutral": counts["neutral"],
        "sharpness": sharpness,
        "ipa": ipa_transcription(word),
        "espeak": espeak_phonemes(word),
    }


def candidate_words(cfg: Mapping) -> list[str]:
    """Every ``c1 v1 c2 v2 c1 v1`` word, in a fixed order (c1, v1, c2, v2 nested loops)."""
    return [
        c1 + v1 + c2 + v2 + c1 + v1
        for c1, v1, c2, v2 in itertools.product(
            cfg["consonants"], cfg["vowels"], cfg["consonants"], cfg["vowels"]
        )
    ]


def inventory(cfg: Mapping, seed: int = 0) -> pd.DataFrame:
    """The pseudoword inventory: purely sharp and purely round words, then the references.

    ``cfg`` is the ``stimuli.pseudowords`` section of the config. ``words_per_class`` (None
    keeps everything) draws that many words per class with a generator seeded by ``seed``;
    the drawn words keep their inventory order, and the references are always kept.
    """
    rows = []
    for word in candidate_words(cfg):
        features = word_features(word, cfg)
        if features["label"] is not None:
            rows.append({**features, "is_reference": False})
    words = pd.DataFrame(rows, columns=list(INVENTORY_COLUMNS))

    per_class = cfg.get("words_per_class")
    if per_class is not None:
        rng = np.random.default_rng(seed)
        keep = []
        for label in ("sharp", "round"):
            index = np.flatnonzero(words["label"].to_numpy() == label)
            if per_class > len(index):
                raise ValueError(
                    f"words_per_class={per_class}, but only {len(index)} {label} words exist"
                )
            keep.extend(rng.choice(index, size=int(per_class), replace=False).tolist())
        words = words.iloc[sorted(keep)]

    references = []
    for word in cfg.get("references", []):
        features = word_features(word, cfg)
        if features["label"] is None:
            raise ValueError(f"reference word {word!r} mixes sharp and round sounds")
        references.append({**features, "is_reference": True})
    out = pd.concat([words, pd.DataFrame(references, columns=list(INVENTORY_COLUMNS))])
    out = out.reset_index(drop=True)
    if out["word"].duplicated().any():
        raise ValueError(f"duplicate words: {sorted(out.loc[out['word'].duplicated(), 'word'])}")
    return out.astype({"is_reference": bool, "n_sharp": int, "n_round": int, "n_neutral": int})


def text_manifest(words: pd.DataFrame, templates: Sequence[str]) -> pd.DataFrame:
    """The ``pseudoword_text`` set: one row per word × prompt template.

    ``stimulus_id`` is ``<word>-t<template index>``; ``text`` fills ``{word}`` in the template.
    """
    if not templates:
        raise ValueError("at least one text template is needed")
    rows = []
    for record in words.to_dict("records"):
        for index, template in enumerate(templates):
            rows.append(
                {
                    "stimulus_id": f"{record['word']}-t{index}",
                    "word": record["word"],
                    "text": template.format(word=record["word"]),
                    "template": template,
                    "template_index": index,
                    **{k: record[k] for k in INVENTORY_COLUMNS if k != "word"},
                }
            )
    return pd.DataFrame(rows)


def make_pseudoword_text(cfg: Mapping, seed: int, out_manifest: str | os.PathLike) -> pd.DataFrame:
    """Build the inventory and write the ``pseudoword_text`` manifest.

    ``cfg`` is the ``stimuli.pseudowords`` section.
    """
    words = inventory(cfg, seed=seed)
    manifest = text_manifest(words, cfg.get("text_templates", ["{word}"]))
    write_parquet(manifest, out_manifest)
    counts = words.loc[~words["is_reference"], "label"].value_counts().to_dict()
    log.info(
        "pseudoword_text: %d words (%s) + %d references, %d rows → %s",
        int((~words["is_reference"]).sum()),
        counts,
        int(words["is_reference"].sum()),
        len(manifest),
        out_manifest,
    )
    return manifest
