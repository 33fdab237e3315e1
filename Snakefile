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


# What the config asks for, printed (nothing is computed): snakemake list_study
rule list_study:
    params:
        config=config,
        figures=FIGURES,
    localrule: True
    log:
        "logs/list_study.log",
    conda:
        "envs/analysis.yaml"
    script:
        "workflow/scripts/list_study.py"


# One study alone, with what it needs and nothing else: snakemake study_symbolism --cores 2
rule study_symbolism:
    input:
        symbolism_tables(),
        symbolism_forms_tables(),
        expand("results/figures/{f}.pdf", f=[f for f in FIGURES if f.startswith("symbolism_")]),


rule study_probing:
    input:
        rsa_tables(),
        probe_tables(),
        expand("results/figures/{f}.pdf", f=[f for f in FIGURES if f.startswith(("rsa_", "rdm_", "probe_"))]),


rule study_retrieval:
    input:
        retrieval_tables(),
        expand("results/figures/{f}.pdf", f=[f for f in FIGURES if f.startswith("retrieval_")]),


rule study_dense:
    input:
        dense_tables(),
        expand("results/figures/{f}.pdf", f=[f for f in FIGURES if f.startswith("dense_")]),
