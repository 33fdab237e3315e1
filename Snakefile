from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# The report's opening page: what the study is, how to read it, which models are controls.
report: "workflow/report/workflow.rst"


# rules/common.smk validates the config against config/schema.yaml (defaults filled in) and
# cross-checks it (avprobe.plan) before any job starts.
include: "rules/common.smk"
include: "rules/stimuli.smk"
include: "rules/extract.smk"
include: "rules/analysis.smk"
include: "rules/figures.smk"


rule all:
    input:
        all_targets(),
    default_target: True
