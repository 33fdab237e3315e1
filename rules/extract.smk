rule build_untrained_model:
    output:
        config="results/models/{model}/config.json",
    params:
        source=lambda wildcards: local_source(MODELS[wildcards.model]["source"]),
        seed=config["seed"],
    log:
        "logs/models/build_{model}.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/build_untrained_model.py"


rule extract_embeddings:
    input:
        unpack(extraction_inputs),
    output:
        embeddings="results/embeddings/{set}/{model}.parquet",
    params:
        set=lambda wildcards: wildcards.set,
        model=lambda wildcards: wildcards.model,
        spec=lambda wildcards: MODELS[wildcards.model],
    threads: lambda wildcards: MODELS[wildcards.model]["threads"]
    resources:
        gpu=lambda wildcards: plan.gpus_for(MODELS[wildcards.model]),
        mem_mb=lambda wildcards: MODELS[wildcards.model]["mem_mb"],
        runtime=lambda wildcards: MODELS[wildcards.model]["runtime"],
    log:
        "logs/embeddings/{set}/{model}.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/extract_embeddings.py"


localrules:
    prefetch_models,


rule prefetch_models:
    output:
        resolved="results/models/prefetched.json",
    params:
        models=lambda wildcards: {
            name: spec
            for name, spec in MODELS.items()
            if spec.get("kind", "pretrained") == "pretrained"
        },
    log:
        "logs/models/prefetch_models.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/prefetch_models.py"
