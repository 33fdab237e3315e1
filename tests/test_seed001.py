"""Seed 001 as a config: the transfer splits of the material probe, and config/seed001.yaml
planning BEATs, YAMNet and CLAP on the impact sounds (RSA, partial RSA, probes) without the hub."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import yaml

from avprobe.analysis import probe
from workflow_cli import ROOT, run_snakemake

SPLITS = yaml.safe_load((ROOT / "config" / "seed001.yaml").read_text())["analysis"]["probe"]["splits"]


def _impacts(rng):
    rows = [dict(stimulus_id=f"i{k}", material=m, hollowness=h, extension=e)
            for k, (m, h, e, _) in enumerate(itertools.product(
                ["wood", "metal", "glass"], ["hollow", "solid"], ["1d", "2d", "3d"], range(4)))]
    frame = pd.DataFrame(rows)
    codes = frame["material"].astype("category").cat.codes.to_numpy()
    x = rng.normal(size=(len(frame), 6))
    x[:, 0] += 8.0 * codes  # material is linearly readable whatever the hollowness or extension
    return frame, x


def test_material_transfers_across_hollowness_and_extension():
    frame, x = _impacts(np.random.default_rng(0))
    rows = pd.DataFrame(probe.probe_layer(x, frame, targets=["material", "hollowness", "extension"], folds=3,
                                          cs=[1.0], splits=SPLITS, n_bootstrap=20, n_permutations=20))
    acc = rows.query("metric == 'accuracy'")
    # the splits run for material only (their `targets`), never for the column they condition on
    assert set(acc.query("target == 'material'")["split"]) == {"cv"} | {s["name"] for s in SPLITS}
    assert set(acc.query("target != 'material'")["split"]) == {"cv"}
    transfer = acc.query("target == 'material' and split == 'hollow_to_solid'").iloc[0]
    assert transfer["n_train"] == 36 and transfer["n"] == 36 and transfer["value"] > 0.9
    assert acc.query("split == '1d2d_to_3d'").iloc[0]["n"] == 24


def test_a_split_over_columns_a_set_lacks_leaves_that_set_alone():
    rng = np.random.default_rng(1)
    words = pd.DataFrame({"stimulus_id": [f"w{i}" for i in range(40)], "label": ["sharp", "round"] * 20})
    x = rng.normal(size=(40, 4))
    untargeted = [{k: v for k, v in s.items() if k != "targets"} for s in SPLITS]
    rows = pd.DataFrame(probe.probe_layer(x, words, targets=["label"], folds=3, cs=[1.0], splits=untargeted,
                                          n_bootstrap=10, n_permutations=10))
    assert set(rows["split"]) == {"cv"}


def test_seed001_config_plans_the_three_models_on_the_impacts_without_the_hub():
    out = run_snakemake("-n", "--configfile", "config/seed001.yaml").stdout
    assert re.search(r"^\s*(?:local)?rule prefetch_model:", out, re.M)
    assert "results/models/beats-untrained" in out  # the seeded controls are built (the whole folder)
    for model in ("beats-iter3plus", "yamnet", "clap-htsat", "beats-untrained", "yamnet-untrained"):
        for path in (f"results/embeddings/impacts/{model}.parquet", f"results/tables/rsa/impacts/{model}.parquet",
                     f"results/tables/probe/impacts/{model}.parquet"):
            assert path in out, path
    assert "results/figures/rsa_partial.pdf" in out and "results/figures/probe_layers.pdf" in out
    # partial RSA regresses the spectrogram (logmel) out: its RDM is an input of each model's RSA
    assert "results/tables/rsa/impacts/logmel.parquet" in out
