"""Print what the config asks for (avprobe.plan.describe): models, embeddings, analyses, figures.

snakemake.params.config, snakemake.params.figures
"""

from avprobe.plan import describe

print(describe(snakemake.params.config, list(snakemake.params.figures)))  # noqa: F821
