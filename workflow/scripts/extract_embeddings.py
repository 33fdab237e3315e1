"""Embed one stimulus set with one model.

snakemake.input.manifest:          results/stimuli/<set>/manifest.parquet
snakemake.input.model_dir:         optional; the folder of a built untrained model (loaded instead
                                   of params.spec['source'])
snakemake.params.set / .model / .spec: set name, model name, the model's config['models'] entry
snakemake.output.embeddings:       results/embeddings/<set>/<model>.parquet, or for shard k of N
                                   (params.shard = [k, N]) <model>.shards/<k>-of-<N>.parquet
snakemake.output.rejected:         optional; the quarantined stimuli (stimulus_id, path, check, reason)
snakemake.input.voice_qc:          optional; the speech QC voice table: clips of its excluded voices
                                   are quarantined (check voice_qc)
snakemake.config on_bad_input / multichannel_audio: quarantine | fail, quarantine | downmix;
                 max_audio_seconds, min_image_size (avprobe.validate)
snakemake.threads, snakemake.log[0]
"""

from avprobe.extract import extract_embeddings, model_dir_from_config
from avprobe.runtime import job_log
from avprobe.stimuli.intelligibility import excluded_voices

config = getattr(snakemake, "config", None) or {}  # noqa: F821  (tests call the script without one)

with job_log(snakemake.log[0] if snakemake.log else None, snakemake.threads):  # noqa: F821
    extract_embeddings(
        snakemake.input.manifest,  # noqa: F821
        snakemake.params.set,  # noqa: F821
        snakemake.params.model,  # noqa: F821
        dict(snakemake.params.spec),  # noqa: F821
        snakemake.output.embeddings,  # noqa: F821
        model_dir=model_dir_from_config(getattr(snakemake.input, "model_dir", None)),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        rejected_path=snakemake.output.get("rejected"),  # noqa: F821
        **{key: config[key] for key in ("on_bad_input", "multichannel_audio", "max_audio_seconds",
                                             "min_image_size") if key in config},
        shard=getattr(snakemake.params, "shard", None),  # noqa: F821
        excluded_voices=excluded_voices(getattr(snakemake.input, "voice_qc", None)),  # noqa: F821
    )
