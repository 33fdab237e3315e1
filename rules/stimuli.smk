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


rule synthesize_pseudowords:
    input:
        manifest=manifest("pseudoword_text"),
    output:
        manifest=manifest("pseudowords"),
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
