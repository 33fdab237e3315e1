"""Caption WER of TTS voices with the packaged Whisper base: how the README's voice table was made.

    .venv/bin/python benchmarks/voice_wer.py                       # the config's voices, 15 captions, seed 7
    .venv/bin/python benchmarks/voice_wer.py --voices '[{"id": "x", "engine": "espeak", "voice": "en-us", "variant": "m6", "rate": 150}]' \
        --captions 24 --seed 1 --windows 10                        # candidate voices (the selection sample)

Each voice speaks the same ``--captions`` captions of the default scene set (drawn with
``--seed``) from text, post-processed as the pipeline does (``avprobe.stimuli.audio``); Whisper base
(CTranslate2 int8, greedy) transcribes each clip once per window in ``--windows``; the WER is the
corpus WER after ``avprobe.stimuli.intelligibility.normalize_words``. Prints one line per voice.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))


def main() -> None:
    from avprobe.analysis.retrieval import edit_distance
    from avprobe.models.ct2_whisper import CT2Whisper, assemble_packaged_whisper
    from avprobe.stimuli import audio, scenes, tts
    from avprobe.stimuli.intelligibility import normalize_words

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voices", help="JSON list of voice entries (default: stimuli.tts.voices of config.yaml)")
    ap.add_argument("--captions", type=int, default=15)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--windows", default="30,10", help="comma-separated window lengths in seconds")
    ap.add_argument("--model", help="a CTranslate2 Whisper folder (default: the packaged Whisper base)")
    args = ap.parse_args()
    voices = json.loads(args.voices) if args.voices else config["stimuli"]["tts"]["voices"]
    _, captions = scenes.scene_plan(config["stimuli"]["scenes"], seed=0)
    texts = pd.Series(captions["text"]).sample(args.captions, random_state=args.seed).tolist()
    model = args.model or assemble_packaged_whisper(Path(tempfile.mkdtemp()) / "whisper-base-ct2")
    windows = [float(w) for w in args.windows.split(",")]
    recognisers = {w: CT2Whisper(model, threads=2, window_s=w) for w in windows}
    post = audio.Postprocessing()
    for entry in voices:
        voice = tts.check_voice(tts.Voice.from_config(entry))
        engine = tts.get_engine(voice.engine)
        clips = []
        for text in texts:
            utt = engine.synthesize(voice, text, "text")
            clips.append(audio.postprocess(utt.samples, utt.sample_rate, post)[0])
        refs = [normalize_words(t) for t in texts]
        n_words = sum(len(r) for r in refs)
        wers = {}
        for w, asr in recognisers.items():
            heard = asr(clips)
            wers[w] = sum(edit_distance(r, normalize_words(h)) for r, h in zip(refs, heard)) / n_words
        print(json.dumps(entry), " ".join(f"WER@{w:g}s {v:.3f}" for w, v in wers.items()),
              f"({len(texts)} captions, {n_words} words)", flush=True)


if __name__ == "__main__":
    main()
