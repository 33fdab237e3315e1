localrules:
    flag_model_rebuild,


rule flag_model_rebuild:
    output:
        "results/models/{model}.rebuild",
    params:
        # what broke, and when: a new breakage reruns this rule, and so the build
        state=lambda wildcards: rebuild_state(built_model_dir(wildcards.model), f"results/models/{wildcards.model}.rebuild"),
    log:
        "logs/models/rebuild_{model}.log",
    conda:
        "../envs/models.yaml"
    shell:
        "echo '{params.state}' | tee {output} > {log}"


# The whole folder is the output (weights, tokenizer, configs): --delete-all-output removes it,
# and a folder with a missing or changed file is rebuilt (the flag above).
rule build_untrained_model:
    input:
        unpack(model_rebuild_flag),
    output:
        model=directory("results/models/{model}"),
    params:
        source=lambda wildcards: local_source(MODELS[wildcards.model]["source"]),
        family=lambda wildcards: MODELS[wildcards.model]["family"],
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
        rejected="results/embeddings/{set}/rejected/{model}.parquet",
    params:
        set=lambda wildcards: wildcards.set,
        model=lambda wildcards: wildcards.model,
        spec=lambda wildcards: MODELS[wildcards.model],
    wildcard_constraints:
        model=alternatives(m for m in MODELS if m not in SHARDS),
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


# A model with `shards: N` (N > 1) embeds each set as N jobs, each a run of whole batches of the
# unsharded run's batch plan (avprobe.extract.plan_batches, shard_bounds): an interrupted run
# resumes with the shards not yet written. merge_embedding_shards then writes the same
# <model>.parquet an unsharded run writes (rows, order and values, byte for byte), and the shard
# files, and any temporary file a killed shard left, are removed.
rule extract_embedding_shard:
    input:
        unpack(extraction_inputs),
    output:
        embeddings=temp("results/embeddings/{set}/{model}.shards/{shard}-of-{nshards}.parquet"),
        rejected=temp("results/embeddings/{set}/rejected/{model}.shards/{shard}-of-{nshards}.parquet"),
    params:
        set=lambda wildcards: wildcards.set,
        model=lambda wildcards: wildcards.model,
        spec=lambda wildcards: MODELS[wildcards.model],
        shard=lambda wildcards: [int(wildcards.shard), int(wildcards.nshards)],
    wildcard_constraints:
        model=alternatives(SHARDS),
        shard=r"\d+",
        nshards=r"\d+",
    threads: lambda wildcards: MODELS[wildcards.model]["threads"]
    resources:
        gpu=lambda wildcards: plan.gpus_for(MODELS[wildcards.model]),
        mem_mb=lambda wildcards: MODELS[wildcards.model]["mem_mb"],
        runtime=lambda wildcards: MODELS[wildcards.model]["runtime"],
    log:
        "logs/embeddings/{set}/{model}.shards/{shard}-of-{nshards}.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/extract_embeddings.py"


rule merge_embedding_shards:
    input:
        manifest=lambda wildcards: manifest(wildcards.set),
        shards=shard_files,
        rejected=shard_rejected_files,
    output:
        embeddings="results/embeddings/{set}/{model}.parquet",
        rejected="results/embeddings/{set}/rejected/{model}.parquet",
    wildcard_constraints:
        model=alternatives(SHARDS),
    threads: 1
    resources:
        mem_mb=lambda wildcards: MODELS[wildcards.model]["mem_mb"],
    log:
        "logs/embeddings/{set}/{model}.merge.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/merge_embeddings.py"


# Seed 003's cascade: the asr.model recogniser transcribes a spoken set (captions) into a text
# set (caption_asr: text = transcript, reference_text = the spoken caption), which the text
# towers then embed like any other text set. Only planned when asr.model is set.
rule transcribe:
    input:
        unpack(transcribe_inputs),
    output:
        manifest="results/stimuli/{asr_set}/manifest.parquet",
    params:
        model=ASR_MODEL,
        spec=lambda wildcards: MODELS[ASR_MODEL],
        backend=ASR_BACKEND,
        ct2=(config.get("asr") or {}).get("ctranslate2") or {},
    wildcard_constraints:
        asr_set=alternatives(ASR_SETS),
    threads: lambda wildcards: MODELS[ASR_MODEL]["threads"]
    resources:
        gpu=lambda wildcards: plan.gpus_for(MODELS[ASR_MODEL]),
        mem_mb=lambda wildcards: MODELS[ASR_MODEL]["mem_mb"],
        runtime=lambda wildcards: MODELS[ASR_MODEL]["runtime"],
    log:
        "logs/stimuli/transcribe_{asr_set}.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/transcribe.py"


# asr.backend ctranslate2: the recogniser's checkpoint (a built control or a prefetched hub
# model) converted once to CTranslate2 format (avprobe.models.ct2_whisper).
rule convert_asr_model:
    input:
        unpack(lambda wildcards: model_weights(ASR_MODEL)),
    output:
        model=f"results/models/{ASR_MODEL}-ct2/model.bin",
    params:
        model=ASR_MODEL,
        spec=lambda wildcards: MODELS[ASR_MODEL],
    log:
        f"logs/models/convert_{ASR_MODEL}-ct2.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/convert_asr_model.py"


localrules:
    prefetch_model,
    prefetch_models,


# One hub model's weights (a login node with internet; compute nodes then read the cache).
rule prefetch_model:
    output:
        resolved="results/models/prefetched/{model}.json",
    params:
        models=lambda wildcards: {wildcards.model: MODELS[wildcards.model]},
    wildcard_constraints:
        model=alternatives(HUB_MODELS),
    log:
        "logs/models/prefetch_{model}.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/prefetch_models.py"


# Every hub model of the config: snakemake prefetch_models --configfile config/paper.yaml
rule prefetch_models:
    input:
        records=[prefetch_record(m) for m in HUB_MODELS],
    output:
        resolved="results/models/prefetched.json",
    log:
        "logs/models/prefetch_models.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/prefetch_models.py"
