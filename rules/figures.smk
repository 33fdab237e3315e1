# One rule per figure, so editing one figure's code or style reruns only that figure.
# Figures read tables (or small cached slices such as RDM npz files), never embeddings.

FIGURE_INPUTS = {
    "stimulus_montage": {
        "shapes": manifest("shapes"),
        "shapes_dir": "results/stimuli/shapes/images",
        "pseudowords": manifest("pseudowords"),
        "pseudowords_dir": "results/stimuli/pseudowords/audio",
    },
    "symbolism_auc": {"tables": symbolism_tables()},
    "symbolism_scores": {"tables": symbolism_score_tables()},
    "rsa_layers": {"tables": rsa_tables()},
    "rsa_partial": {"tables": rsa_tables()},
    "rdm_heatmaps": {"rdms": rsa_rdms()},
    "probe_layers": {"tables": probe_tables()},
    "retrieval_recall": {"tables": retrieval_tables()},
}

FIGURE_CATEGORY = {
    "stimulus_montage": "Stimuli",
    "symbolism_auc": "Sound symbolism",
    "symbolism_scores": "Sound symbolism",
    "rsa_layers": "RSA",
    "rsa_partial": "RSA",
    "rdm_heatmaps": "RSA",
    "probe_layers": "Probes",
    "retrieval_recall": "Retrieval",
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
            models=MODELS,
        log:
            f"logs/figures/{figure_name}.log",
        conda:
            "../envs/plots.yaml"
        script:
            "../workflow/scripts/figure.py"
