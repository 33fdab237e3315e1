from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/stimuli.smk"
include: "rules/extract.smk"
include: "rules/analysis.smk"
include: "rules/figures.smk"


rule all:
    input:
        all_targets(),
    default_target: True
