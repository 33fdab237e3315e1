rule make_pseudowords:
    output:
        manifest=manifest("pseudoword_text"),
    params:
        cfg=config["stimuli"]["pseudowords"],
        seed=config["seed"],
    log:
        "logs/stimuli/make_pseudowords.log",
    conda:
        "../envs/stimuli.yaml"
    script:
        "../workflow/scripts/make_pseudowords.py"


# Text anchors for models whose space joins audio and text but not images (CLAP): adjective
# prompts, Alper & Averbuch-Elor's anchors. Built only when a symbolism entry scores against them.
rule make_shape_adjectives:
    output:
        manifest=manifest("shape_adjectives"),
    params:
        cfg=config["stimuli"]["shape_adjectives"],
    log:
        "logs/stimuli/make_shape_adjectives.log",
    conda:
        "../envs/stimuli.yaml"
    script:
        "../workflow/scripts/make_shape_adjectives.py"


rule synthesize_pseudowords:
    input:
        manifest=manifest("pseudoword_text"),
    output:
        manifest=manifest("pseudowords"),
        qc="results/stimuli/pseudowords/qc.parquet",
        directory=directory("results/stimuli/pseudowords/audio"),
    params:
        kind="pseudowords",
        cfg=config["stimuli"]["tts"],
        seed=config["seed"],
    threads: 2
    log:
        "logs/stimuli/synthesize_pseudowords.log",
    conda:
        "../envs/stimuli.yaml"
    script:
        "../workflow/scripts/synthesize_speech.py"


rule render_shapes:
    output:
        manifest=manifest("shapes"),
        directory=directory("results/stimuli/shapes/images"),
    params:
        cfg=config["stimuli"]["shapes"],
        seed=config["seed"],
    log:
        "logs/stimuli/render_shapes.log",
    conda:
        "../envs/stimuli.yaml"
    script:
        "../workflow/scripts/render_shapes.py"


rule compose_scenes:
    output:
        manifest=manifest("scenes"),
        caption_text=manifest("caption_text"),
        directory=directory("results/stimuli/scenes/images"),
    params:
        cfg=config["stimuli"]["scenes"],
        seed=config["seed"],
    log:
        "logs/stimuli/compose_scenes.log",
    conda:
        "../envs/stimuli.yaml"
    script:
        "../workflow/scripts/compose_scenes.py"


rule speak_captions:
    input:
        manifest=manifest("caption_text"),
    output:
        manifest=manifest("captions"),
        qc="results/stimuli/captions/qc.parquet",
        directory=directory("results/stimuli/captions/audio"),
    params:
        kind="captions",
        cfg=config["stimuli"]["tts"],
        seed=config["seed"],
    threads: 2
    log:
        "logs/stimuli/speak_captions.log",
    conda:
        "../envs/stimuli.yaml"
    script:
        "../workflow/scripts/synthesize_speech.py"


rule synthesize_impacts:
    output:
        manifest=manifest("impacts"),
        qc="results/stimuli/impacts/qc.parquet",
        directory=directory("results/stimuli/impacts/audio"),
    params:
        cfg=config["stimuli"]["impacts"],
        seed=config["seed"],
    log:
        "logs/stimuli/synthesize_impacts.log",
    conda:
        "../envs/stimuli.yaml"
    script:
        "../workflow/scripts/synthesize_impacts.py"


# The corpus is checked when the workflow is parsed (avprobe.stimuli.corpora.check_corpus_config).
# Its manifest files (not its thousands of clips) are the inputs: editing one reruns the import.
rule import_corpus:
    input:
        lambda wildcards: [
            path
            for key, path in config["stimuli"]["corpora"][wildcards.corpus].items()
            if key in ("captions_file", "split_file", "wav2capt_file", "speakers_file", "json_file")
        ],
    output:
        images=manifest("{corpus}_images"),
        captions=manifest("{corpus}_captions"),
        caption_text=manifest("{corpus}_caption_text"),
        qc="results/stimuli/{corpus}_captions/qc.parquet",
    params:
        cfg=lambda wildcards: config["stimuli"]["corpora"][wildcards.corpus],
    wildcard_constraints:
        corpus="flickr8k|spokencoco",
    log:
        "logs/stimuli/import_corpus_{corpus}.log",
    conda:
        "../envs/stimuli.yaml"
    script:
        "../workflow/scripts/import_corpus.py"
