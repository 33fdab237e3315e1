"""Extraction: batched, padding-aware vs one item at a time, through the pipeline's own function.

Both ways call :func:`avprobe.extract.extract_embeddings` on the same manifest with the same
model; only ``batch_size`` differs (the config's batch size vs 1). That function sorts items by
length (audio duration, text length) so a batch pads little, and the adapters pool with the
attention mask so padding never counts. A third row runs the same batches in manifest order
(no length sorting), through the adapter directly, to show what the sorting saves.
"""

from __future__ import annotations

import numpy as np

from common import Context, Section, log, synthetic_waves, timed, times, write_audio_set, write_image_set, write_text_set

MODEL_CONFIGS = {
    "hubert-untrained": ("hubert-tiny", "hf_audio", ("audio",), 16),
    "clip-untrained": ("clip-tiny", "clip", ("text", "image"), 32),
}
#: The pipeline's default threads per extraction job (config schema: models.<name>.threads).
EXTRACT_THREADS = 1
SET_OF = {"audio": "pseudowords", "image": "shapes", "text": "pseudoword_text"}


def _build(name: str, ctx: Context):
    from avprobe.models.build import build_untrained
    from common import ROOT

    cfg_dir, family, towers, batch = MODEL_CONFIGS[name]
    out = ctx.workdir / "models" / name
    build_untrained(ROOT / "resources" / "model_configs" / cfg_dir, out, seed=0)
    spec = {"family": family, "kind": "untrained", "source": str(ROOT / "resources" / "model_configs" / cfg_dir),
            "towers": list(towers), "batch_size": batch}
    return spec, out


def _max_diff(a_path, b_path) -> tuple[float, float]:
    """Largest |a − b| over every layer, and the largest |a| (for scale)."""
    from avprobe import io

    diff = scale = 0.0
    for name, _ in io.embedding_layers(a_path):
        ids_a, a = io.read_layer(a_path, name)
        ids_b, b = io.read_layer(b_path, name)
        assert ids_a == ids_b
        diff = max(diff, float(np.abs(a.astype(np.float64) - b).max()))
        scale = max(scale, float(np.abs(a).max()))
    return diff, scale


def _unsorted_batches(adapter, modality, manifest, batch_size, layers):
    """The same batches, in manifest order (lengths mixed: more padding)."""
    import pandas as pd

    from avprobe import extract, io

    df = pd.read_parquet(manifest)
    for lo in range(0, len(df), batch_size):
        rows = df.iloc[lo:lo + batch_size]
        if modality == "audio":
            items = [extract.load_audio(io.resolve_stimulus_path(manifest, p)) for p in rows["path"]]
        elif modality == "image":
            items = [extract.load_image(io.resolve_stimulus_path(manifest, p)) for p in rows["path"]]
        else:
            items = rows["text"].astype(str).tolist()
        adapter.embed(modality, items, layers=layers)
    return len(df)


def run(ctx: Context) -> Section:
    import torch

    from avprobe.extract import extract_embeddings
    from avprobe.models import load_model

    sec = Section("extraction", "Extraction: batched (padding-aware) vs one item at a time")
    n = {"audio": ctx.pick(384, 32), "image": ctx.pick(192, 16), "text": ctx.pick(384, 32)}
    cuda = torch.cuda.is_available()
    threads = EXTRACT_THREADS
    sec.say(
        f"Device: **CPU**, {threads} torch thread per extraction, as the pipeline runs an extraction job "
        "(`models.<name>.threads` defaults to 1; Snakemake runs jobs side by side on the other cores). "
        f"`torch.cuda.is_available()` = {cuda}; no GPU was used. "
        "Models: seeded untrained HuBERT-tiny (audio) and CLIP-tiny (image and text towers), built from "
        "`resources/model_configs/` with `avprobe.models.build.build_untrained`, every layer extracted "
        "(HuBERT 5 layers, CLIP 5 + joint). Stimuli are synthetic: voice-like clips of 0.3–1.5 s at 16 kHz, "
        "224×224 PNG polygons, prompts of 1–14 words. Both ways run `avprobe.extract.extract_embeddings` "
        "(read files → embed → write Parquet); only `batch_size` differs. items/s counts the extraction "
        "loop (file reading + model), not model loading or the Parquet write; wall time is the whole call."
    )
    data = {
        "audio": write_audio_set(ctx.workdir / "audio", synthetic_waves(n["audio"], seed=1)),
        "image": write_image_set(ctx.workdir / "image", n["image"], seed=2),
        "text": write_text_set(ctx.workdir / "text", n["text"], seed=3),
    }
    rows = []
    for model, modalities in (("hubert-untrained", ("audio",)), ("clip-untrained", ("image", "text"))):
        spec, model_dir = _build(model, ctx)
        for modality in modalities:
            set_name, manifest = SET_OF[modality], data[modality]
            spec_m = dict(spec, towers=[modality])
            batch = spec["batch_size"]
            # warm-up (first torch calls in a process are slow), not timed
            warm = ctx.workdir / f"warm-{model}-{modality}.parquet"
            extract_embeddings(manifest, set_name, model, dict(spec_m, batch_size=batch), warm,
                               model_dir=model_dir, device="cpu", threads=threads)
            res = {}
            for label, bs in (("one at a time", 1), ("batched", batch)):
                out = ctx.workdir / f"{model}-{modality}-b{bs}.parquet"
                log(f"extraction {model}/{modality}: {label} (batch {bs}, {n[modality]} items)")
                wall, summary = timed(extract_embeddings, manifest, set_name, model, dict(spec_m, batch_size=bs), out,
                                      model_dir=model_dir, device="cpu", threads=threads)
                res[label] = (wall, summary, out)
            diff, scale = _max_diff(res["one at a time"][2], res["batched"][2])
            one, bat = res["one at a time"][1], res["batched"][1]
            ratio = bat["items_per_s"] / one["items_per_s"]
            # same batches, manifest order (no length sorting)
            unsorted_rate = float("nan")
            if modality in ("audio", "text"):
                adapter = load_model(model, dict(spec_m, batch_size=batch), model_dir=model_dir, device="cpu")
                torch.set_num_threads(threads)
                layers = adapter.select_layers(modality, None)
                t, count = timed(_unsorted_batches, adapter, modality, manifest, batch, layers)
                unsorted_rate = count / t
            rows.append([f"{model} / {modality}", n[modality], batch, one["items_per_s"], bat["items_per_s"],
                         unsorted_rate, times(ratio), res["one at a time"][0], res["batched"][0], diff, scale])
            sec.ratio(f"extraction {model}/{modality}: batched vs one at a time (items/s)", ratio, "> 1",
                      f"max abs diff {diff:.1e} (embeddings up to {scale:.2g})")
    sec.table(
        "items/s (higher is better) and agreement",
        ["model / tower", "items", "batch", "one at a time items/s", "batched items/s",
         "batched, unsorted items/s", "ratio batched / one", "wall one (s)", "wall batched (s)",
         "max abs diff (all layers)", "max abs value"],
        rows,
    )
    sec.note("'batched, unsorted' runs the same batch size in manifest order through the adapter directly "
             "(clips of mixed lengths in one batch pad more); it does not read or write Parquet either.")
    sec.note("max abs diff compares every layer's embeddings of the batched run with the one-at-a-time run "
             "(float32; differences are summation-order rounding).")
    return sec
