"""TTS: clips per second per engine (the engines of ``avprobe.stimuli.tts.ENGINES``)."""

from __future__ import annotations

import time

import yaml

from common import ROOT, Context, Section, log, timed


def _voices(tts_cfg: dict) -> dict[str, dict]:
    """The first configured voice of each engine; piper falls back to the packaged joe voice."""
    from avprobe.stimuli.tts import ENGINES

    out = {}
    for v in tts_cfg.get("voices", []):
        out.setdefault(v["engine"], dict(v))
    if "espeak" in ENGINES:
        out.setdefault("espeak", {"id": "us_m6", "engine": "espeak", "voice": "en-us", "variant": "m6", "rate": 150})
    if "piper" in ENGINES:
        out.setdefault("piper", {"id": "joe", "engine": "piper", "voice": "en_US-joe-medium"})
    return {e: v for e, v in out.items() if e in ENGINES}


def run(ctx: Context) -> Section:
    from avprobe.stimuli import pseudowords, speech
    from avprobe.stimuli.tts import Voice, get_engine

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    tts_cfg = dict(config["stimuli"]["tts"])
    words = pseudowords.inventory(config["stimuli"]["pseudowords"], seed=0)
    words = words[~words["is_reference"]]
    n_engine = ctx.pick(60, 4)
    n_stage = ctx.pick(96, 6)
    pick = words.iloc[:: max(1, len(words) // n_stage)].head(n_stage).reset_index(drop=True)
    sec = Section("tts", "Text-to-speech: clips per second per engine")
    sec.say(
        f"Pseudowords of the default inventory (six letters, CVCVCV, spoken from phonemes as the default "
        f"config does), the first voice of each engine in `config.yaml`. **Engine only**: "
        f"`engine.synthesize` for {n_engine} words in this process, one after the other (the engine is "
        f"started and warmed up first, not timed). **Pipeline stage**: `avprobe.stimuli.speech."
        f"synthesize_pseudowords` for {n_stage} words with {ctx.threads} worker processes — synthesis, "
        "resampling to 16 kHz, trimming, loudness normalisation, WAV writing, the manifest and the QC table, "
        "worker start-up included."
    )
    rows = []
    for engine_name, voice_cfg in _voices(tts_cfg).items():
        log(f"tts {engine_name}: {voice_cfg}")
        try:
            get_engine(engine_name)
        except Exception as err:  # noqa: BLE001 - an engine that is not installed is reported, not fatal
            sec.note(f"{engine_name}: not measured, the engine did not start ({type(err).__name__}: {err})")
            continue
        voice = Voice.from_config(voice_cfg)
        spoken = [speech.phoneme_input(r, engine_name) for r in pick.head(n_engine).to_dict("records")]
        t_start, engine = timed(get_engine, engine_name)
        engine.synthesize(voice, spoken[0], "phonemes")  # warm-up: loads the voice
        t0 = time.perf_counter()
        seconds_audio = 0.0
        for s in spoken:
            u = engine.synthesize(voice, s, "phonemes")
            seconds_audio += u.samples.size / u.sample_rate
        t_engine = time.perf_counter() - t0
        cfg = dict(tts_cfg, voices=[voice_cfg], input="phonemes")
        out = ctx.workdir / engine_name
        t_stage, manifest = timed(speech.synthesize_pseudowords, pick, cfg, out / "manifest.parquet", out / "audio",
                                  threads=ctx.threads)
        rows.append([engine_name, voice.engine_voice, len(spoken) / t_engine, seconds_audio / t_engine,
                     len(manifest) / t_stage, ctx.threads, t_start])
        sec.ratio(f"tts {engine_name}: clips/s, pipeline stage on {ctx.threads} workers", len(manifest) / t_stage, "",
                  f"engine alone on one core: {len(spoken) / t_engine:.1f} clips/s")
    sec.table(
        "clips per second (higher is better)",
        ["engine", "voice", "engine only, 1 process: clips/s", "… seconds of speech per second",
         "pipeline stage: clips/s", "workers", "engine start (s)"],
        rows,
    )
    return sec
