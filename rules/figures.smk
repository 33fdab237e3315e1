# One rule per figure, so editing one figure's code or style reruns only that figure:
# * each figure's own module avprobe/figures/<figure>.py and the package modules it imports
#   (common, style, ...; avprobe.figures.deps finds them) are inputs of its rule, so editing
#   one reruns exactly the figures drawn with it (Snakemake's code trigger sees only the
#   shared entry script figure.py, whose edit reruns every figure);
# * its options come from config figures.<figure> as params.options, so changing them reruns
#   only that figure.
# Figures read tables (or small cached slices such as RDM npz files), never embeddings.

from avprobe.figures.deps import input_paths as figure_sources


#: What a figure needs to know of each model: its display name and kind (colours follow the
#: config's model order). Other model settings (batch size, ...) do not touch the figures.
FIGURE_MODELS = {
    name: {key: spec[key] for key in ("display", "kind") if key in spec}
    for name, spec in MODELS.items()
}

FIGURE_INPUTS = {
    "stimulus_montage": {
        "shapes": manifest("shapes"),
        "shapes_dir": "results/stimuli/shapes/images",
        "pseudowords": manifest("pseudowords"),
        "pseudowords_dir": "results/stimuli/pseudowords/audio",
    },
    "symbolism_auc": {"tables": symbolism_tables()},
    "symbolism_scores": {"tables": symbolism_score_tables()},
    "symbolism_forms": {"tables": symbolism_forms_tables()},
    "rsa_layers": {"tables": rsa_tables()},
    "rsa_partial": {"tables": rsa_tables()},
    "rdm_heatmaps": {"rdms": rsa_rdms()},
    "probe_layers": {"tables": probe_tables()},
    "retrieval_recall": {"tables": retrieval_tables()},
    "dense_heatmaps": {"examples": dense_examples(), "tables": dense_tables()},
}

FIGURE_CATEGORY = {
    "stimulus_montage": "Stimuli",
    "symbolism_auc": "Sound symbolism",
    "symbolism_scores": "Sound symbolism",
    "symbolism_forms": "Sound symbolism",
    "rsa_layers": "RSA",
    "rsa_partial": "RSA",
    "rdm_heatmaps": "RSA",
    "probe_layers": "Probes",
    "retrieval_recall": "Retrieval",
    "dense_heatmaps": "Dense maps",
}

FIGURE_EXTRA_OUTPUTS = {
    "retrieval_recall": {
        "markdown": "results/tables/retrieval/retrieval.md",
        "latex": "results/tables/retrieval/retrieval.tex",
    },
}

for figure_name in FIGURES:

    rule:
        name:
            f"figure_{figure_name}"
        input:
            **FIGURE_INPUTS[figure_name],
            code=figure_sources(figure_name),
        output:
            pdf=report(
                f"results/figures/{figure_name}.pdf",
                caption=f"../workflow/report/{figure_name}.rst",
                category=FIGURE_CATEGORY[figure_name],
            ),
            png=f"results/figures/{figure_name}.png",
            **FIGURE_EXTRA_OUTPUTS.get(figure_name, {}),
        params:
            figure=figure_name,
            models=FIGURE_MODELS,
            options=config.get("figures", {}).get(figure_name) or {},
        log:
            f"logs/figures/{figure_name}.log",
        conda:
            "../envs/plots.yaml"
        script:
            "../workflow/scripts/figure.py"
