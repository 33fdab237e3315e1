rule symbolism:
    input:
        unpack(symbolism_inputs),
    output:
        table="results/tables/symbolism/{name}.parquet",
        scores="results/tables/symbolism/{name}.scores.parquet",
        anchor_boot="results/tables/symbolism/{name}.anchor_boot.npz",
    wildcard_constraints:
        name=alternatives(SYMBOLISM),
    params:
        model=lambda wildcards: SYMBOLISM[wildcards.name]["model"],
        words=lambda wildcards: SYMBOLISM[wildcards.name]["words"],
        images=lambda wildcards: SYMBOLISM[wildcards.name]["images"],
        space=lambda wildcards: SYMBOLISM_SPACE[wildcards.name]["space"],
        space_layer=lambda wildcards: SYMBOLISM_SPACE[wildcards.name]["space_layer"],
        unaligned=lambda wildcards: SYMBOLISM[wildcards.name].get("unaligned", False),
        n_permutations=config["analysis"]["n_permutations"],
        n_bootstrap=config["analysis"]["n_bootstrap"],
        seed=config["seed"],
    threads: 1
    log:
        "logs/analysis/symbolism/{name}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/symbolism.py"


# Seed 000's speech vs text (vs cascade) comparison: one model's per-word AUC in each form of
# the words and paired-bootstrap differences (avprobe.analysis.symbolism_forms).
rule symbolism_forms:
    input:
        scores=[f"results/tables/symbolism/{e['name']}.scores.parquet" for e in SYMBOLISM_FORMS],
        anchor_boot=[f"results/tables/symbolism/{e['name']}.anchor_boot.npz" for e in SYMBOLISM_FORMS],
    output:
        table=plan.SYMBOLISM_FORMS_TABLE,
    params:
        entries=SYMBOLISM_FORMS,
        n_bootstrap=config["analysis"]["n_bootstrap"],
        seed=config["seed"],
    threads: 1
    log:
        "logs/analysis/symbolism_forms.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/symbolism_forms.py"


rule rsa:
    input:
        unpack(rsa_inputs),
    output:
        table="results/tables/rsa/{set}/{model}.parquet",
        rdms="results/tables/rsa/{set}/{model}.rdms.npz",
    params:
        set=lambda wildcards: wildcards.set,
        model=lambda wildcards: wildcards.model,
        # the ratings file is an input (of the impacts set's jobs), not a parameter
        cfg={k: v for k, v in config["analysis"]["rsa"].items() if k != "ratings"},
        n_permutations=config["analysis"]["n_permutations"],
        n_bootstrap=config["analysis"]["n_bootstrap"],
        seed=config["seed"],
    threads: 1
    log:
        "logs/analysis/rsa/{set}/{model}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/rsa.py"


rule probe:
    input:
        manifest=lambda wildcards: manifest(wildcards.set),
        embeddings="results/embeddings/{set}/{model}.parquet",
    output:
        table="results/tables/probe/{set}/{model}.parquet",
    params:
        set=lambda wildcards: wildcards.set,
        model=lambda wildcards: wildcards.model,
        cfg=config["analysis"]["probe"],
        n_bootstrap=config["analysis"]["n_bootstrap"],
        seed=config["seed"],
    threads: 1
    log:
        "logs/analysis/probe/{set}/{model}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/probe.py"


rule retrieval:
    input:
        unpack(retrieval_inputs),
    output:
        table="results/tables/retrieval/{name}.parquet",
    params:
        name=lambda wildcards: wildcards.name,
        mode=lambda wildcards: RETRIEVAL[wildcards.name]["mode"],
        model=lambda wildcards: RETRIEVAL[wildcards.name]["model"],
        queries=lambda wildcards: RETRIEVAL[wildcards.name]["queries"],
        gallery=lambda wildcards: RETRIEVAL[wildcards.name]["gallery"],
        space=lambda wildcards: RETRIEVAL_SPACE[wildcards.name]["space"],
        layer=lambda wildcards: RETRIEVAL_SPACE[wildcards.name]["space_layer"],
        seed=config["seed"],
    threads: 1
    log:
        "logs/analysis/retrieval/{name}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/retrieval.py"


# Loads the model itself (patch features are not stored with the embeddings): a model job.
rule dense_maps:
    input:
        unpack(dense_inputs),
    output:
        table="results/tables/dense/{model}.parquet",
        examples="results/tables/dense/{model}.examples.npz",
    params:
        model=lambda wildcards: wildcards.model,
        spec=lambda wildcards: MODELS[wildcards.model],
        cfg=config["analysis"]["dense"],
        settings=lambda wildcards: DENSE_PARAMS[wildcards.model],
        n_permutations=config["analysis"]["n_permutations"],
        n_bootstrap=config["analysis"]["n_bootstrap"],
        seed=config["seed"],
    wildcard_constraints:
        model=alternatives(DENSE),
    threads: lambda wildcards: MODELS[wildcards.model]["threads"]
    resources:
        gpu=lambda wildcards: plan.gpus_for(MODELS[wildcards.model]),
        mem_mb=lambda wildcards: MODELS[wildcards.model]["mem_mb"],
        runtime=lambda wildcards: MODELS[wildcards.model]["runtime"],
    log:
        "logs/analysis/dense/{model}.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/dense_maps.py"


rule summary:
    input:
        symbolism=symbolism_tables(),
        symbolism_forms=symbolism_forms_tables(),
        rsa=rsa_tables(),
        probe=probe_tables(),
        retrieval=retrieval_tables(),
        dense=dense_tables(),
        rejected=rejected_tables(),
        speech_qc=[SPEECH_QC["voices"]] if QC_CFG.get("enabled", True) else [],
    output:
        markdown=report(
            "results/tables/summary.md",
            caption="../workflow/report/summary.rst",
            category="Tables",
        ),
    params:
        models=MODELS,
        n_permutations=config["analysis"]["n_permutations"],
    log:
        "logs/analysis/summary.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/summarize.py"


# The run's last job: sha256 of every output (and of the stimuli and built models behind the
# embeddings), the config hash and package versions (avprobe.provenance).
rule provenance:
    input:
        outputs=lambda wildcards: plan.provenance_inputs(
            all_targets(),
            rsa_rdms(),
            symbolism_score_tables(),
            dense_examples(),
            *(FIGURE_EXTRA_OUTPUTS.get(f, {}).values() for f in FIGURES),
        ),
    output:
        table=plan.PROVENANCE,
    params:
        config_hash=plan.config_hash(config),
        workflow_versions=plan.workflow_versions(),
    log:
        "logs/analysis/provenance.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/provenance.py"
