"""Import a real spoken-caption corpus (Flickr8k Audio Captions, SpokenCOCO) as three sets.

snakemake.wildcards.corpus     flickr8k | spokencoco
snakemake.params.cfg           config["stimuli"]["corpora"][corpus] (paths to the corpus's files)
snakemake.output.images        results/stimuli/<corpus>_images/manifest.parquet
snakemake.output.captions      results/stimuli/<corpus>_captions/manifest.parquet (qc.parquet beside it)
snakemake.output.caption_text  results/stimuli/<corpus>_caption_text/manifest.parquet
snakemake.log[0]               the job log (optional)
"""

from avprobe.runtime import job_log
from avprobe.stimuli.corpora import import_corpus

sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0] if sm.log else None, sm.threads):
    import_corpus(
        sm.wildcards.corpus, sm.params.cfg, sm.output.images, sm.output.captions, sm.output.caption_text
    )
