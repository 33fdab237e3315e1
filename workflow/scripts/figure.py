"""Draw one figure (rules/figures.smk runs this script once per figure).

The drawing code of figure <name> is avprobe/figures/<name>.py (plus the shared modules it
imports); the rule lists those files as inputs, so editing one reruns only its figures.

snakemake keys
--------------
params.figure     figure name: symbolism_auc | symbolism_scores | rsa_layers | rsa_partial |
                  probe_layers | retrieval_recall | rdm_heatmaps | stimulus_montage |
                  dense_heatmaps
params.models     display name and kind of each config model, in config order (colours,
                  line styles)
params.options    config figures.<name>: keyword arguments of the figure's drawing function,
                  e.g. {"layers": ["0", "6", "joint"]} for rdm_heatmaps,
                  {"metric": "balanced_accuracy"} for probe_layers, plus "size" [w, h] inches
input.code        the figure's source files (dependencies only)
input.tables      list of tidy Parquet tables, concatenated (all table figures)
input.rdms        list of ``<set>/<model>.rdms.npz`` files (rdm_heatmaps)
input.examples    list of ``dense/<model>.examples.npz`` files (dense_heatmaps)
input.shapes      shapes manifest; input.pseudowords: pseudowords manifest (stimulus_montage;
                  files are resolved relative to each manifest's folder; the *_dir inputs are
                  only dependencies)
output.pdf, output.png          the figure
output.markdown, output.latex   retrieval_recall only, optional: the Recall@K table
log[0]            the job's log
"""

from avprobe.figures.render import render_figure
from avprobe.runtime import job_log


def _get(namedlist, key, default=None):
    try:
        return getattr(namedlist, key)
    except AttributeError:
        return default


with job_log(snakemake.log[0] if snakemake.log else None, snakemake.threads):  # noqa: F821
    render_figure(
        snakemake.params.figure,  # noqa: F821
        models=_get(snakemake.params, "models", {}),  # noqa: F821
        options=_get(snakemake.params, "options", None),  # noqa: F821
        tables=_get(snakemake.input, "tables", ()),  # noqa: F821
        rdms=_get(snakemake.input, "rdms", ()),  # noqa: F821
        examples=_get(snakemake.input, "examples", ()),  # noqa: F821
        shapes=_get(snakemake.input, "shapes"),  # noqa: F821
        pseudowords=_get(snakemake.input, "pseudowords"),  # noqa: F821
        pdf=snakemake.output.pdf,  # noqa: F821
        png=snakemake.output.png,  # noqa: F821
        markdown=_get(snakemake.output, "markdown"),  # noqa: F821
        latex=_get(snakemake.output, "latex"),  # noqa: F821
    )
