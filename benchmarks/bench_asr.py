"""ASR backends: transformers' ``generate`` vs CTranslate2 on the same checkpoint, and the real
Whisper base (CTranslate2, packaged) that the speech QC uses."""

from __future__ import annotations

import time

import numpy as np
import yaml

from common import ROOT, Context, Section, log


def _spoken(texts: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """The captions spoken by the default voices in rotation, post-processed as the pipeline does."""
    from avprobe.stimuli import audio, tts

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    voices = [tts.Voice.from_config(v) for v in config["stimuli"]["tts"]["voices"]]
    waves, ids = [], []
    for i, text in enumerate(texts):
        voice = voices[i % len(voices)]
        utt = tts.get_engine(voice.engine).synthesize(voice, text, "text")
        clip, _ = audio.postprocess(utt.samples, utt.sample_rate, audio.Postprocessing())
        waves.append(clip)
        ids.append(voice.id)
    return waves, ids


def _rate(fn, waves) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    out = fn(waves)
    return len(waves) / (time.perf_counter() - t0), out


def run(ctx: Context) -> Section:
    from avprobe.analysis.retrieval import word_error_rate
    from avprobe.models.asr import WhisperASR
    from avprobe.models.build import build_untrained
    from avprobe.models.ct2_whisper import CT2Whisper, assemble_packaged_whisper, convert_transformers_whisper
    from avprobe.stimuli.intelligibility import normalize_words

    n_tiny = ctx.pick(48, 4)
    n_base = ctx.pick(12, 2)
    texts = _caption_texts(max(n_tiny, n_base))
    waves, voice_ids = _spoken(texts)
    sec = Section("asr", "Speech recognition: transformers generate vs CTranslate2, and the QC recogniser")
    sec.say(
        f"Spoken captions of the default study ({len(waves)} scene captions, the default voices in rotation, "
        "post-processed as the pipeline does). **Like for like**: the repository's tiny random Whisper "
        "(`resources/model_configs/whisper-tiny-random`, built with seed 0: the cascade's default recogniser) "
        "decoded greedily by `WhisperASR` (transformers `generate`, batch 8, 1 torch thread per process as the "
        f"pipeline runs it) and by `CT2Whisper` after `ctranslate2.converters.TransformersConverter` (batch 8, "
        f"{ctx.threads} threads, float32 and int8), on the same {n_tiny} clips with the same prompt and token "
        "limit. Both pad every clip to the model's 4 s window. An untrained model's transcripts are noise, "
        "so the WER column says nothing about recognition; the agreement column compares the two backends' "
        "transcripts. **Real Whisper base**: the packaged CTranslate2 copy (no transformers-format copy installs "
        f"offline, so it has no transformers side here) on {n_base} clips, int8 and float32, with the 30 s window "
        "the QC uses and a 10 s window."
    )
    work = ctx.workdir / "asr"
    built = build_untrained(ROOT / "resources/model_configs/whisper-tiny-random", work / "tiny", seed=0)
    converted = convert_transformers_whisper(built, work / "tiny-ct2")
    spec = {"family": "whisper_asr", "kind": "untrained", "source": str(built), "batch_size": 8, "max_new_tokens": 24}
    tiny = waves[:n_tiny]
    refs = [" ".join(normalize_words(t)) for t in texts[:n_tiny]]
    import torch

    torch.set_num_threads(1)
    hf = WhisperASR(spec, built, device="cpu")
    hf(tiny[:1])  # warm-up, not timed
    hf_rate, hf_out = _rate(hf, tiny)
    rows = [["tiny random", "transformers generate", "float32", f"{hf_rate:.2f}", f"{word_error_rate(refs, hf_out):.3f}", "—"]]
    for compute in ("float32", "int8"):
        ct2 = CT2Whisper(converted, compute_type=compute, threads=ctx.threads, language=None, max_new_tokens=24,
                         batch_size=8)
        ct2(tiny[:1])
        rate, out = _rate(ct2, tiny)
        agree = np.mean([bool(o) and h.startswith(o) for o, h in zip(out, hf_out)])
        rows.append(["tiny random", "CTranslate2", compute, f"{rate:.2f}", f"{word_error_rate(refs, out):.3f}",
                     f"{agree:.2f}"])
        if compute == "float32":
            sec.ratio("ASR tiny random Whisper: CTranslate2 float32 / transformers generate (clips/s)",
                      rate / hf_rate, "> 1", f"transformers {hf_rate:.2f} clips/s, CTranslate2 {rate:.2f} clips/s; "
                      f"transcripts agree on {agree:.0%} of clips")
    base_dir = assemble_packaged_whisper(work / "whisper-base-ct2")
    base_waves, base_refs = waves[:n_base], texts[:n_base]
    for compute, window in (("int8", 30.0), ("float32", 30.0), ("int8", 10.0)):
        asr = CT2Whisper(base_dir, compute_type=compute, threads=ctx.threads, window_s=window, batch_size=4)
        asr(base_waves[:1])
        rate, out = _rate(asr, base_waves)
        wer = word_error_rate([" ".join(normalize_words(t)) for t in base_refs],
                              [" ".join(normalize_words(t)) for t in out])
        rows.append(["Whisper base (packaged)", "CTranslate2", f"{compute}, {window:g} s window", f"{rate:.2f}",
                     f"{wer:.3f}", "—"])
        if compute == "int8":
            sec.ratio(f"ASR Whisper base (CTranslate2 int8, {window:g} s window): clips/s", rate, "",
                      f"caption WER {wer:.3f} on {len(base_waves)} clips"
                      + ("; the speech QC's default window" if window == 10.0 else ""))
        log(f"asr base {compute} {window}: {rate:.2f} clips/s, WER {wer:.3f}")
    sec.table("clips per second (higher is better) and WER on the same clips",
              ["model", "backend", "settings", "clips/s", "WER", "agrees with transformers"], rows)
    return sec


def _caption_texts(n: int) -> list[str]:
    """The first ``n`` captions of the default scene set (avprobe.stimuli.scenes.scene_plan)."""
    from avprobe.stimuli import scenes

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    _, captions = scenes.scene_plan(config["stimuli"]["scenes"], seed=0)
    return captions["text"].astype(str).tolist()[:n]
