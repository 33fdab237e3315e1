"""The contract every registered model family must pass (in the spirit of HEAR's baseline tests).

Parametrised over :data:`avprobe.models.registry.FAMILIES` and each family's tiny test configs,
so a new family is covered by declaring it: batched equals one at a time, deterministic, finite
float32 of one width per layer, the layer list equals the declaration, every shared-space layer
equals the model's own projection function, and the towers of a space agree in width.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from avprobe.models import load_model  # noqa: E402
from avprobe.models.registry import FAMILIES  # noqa: E402
from model_inputs import Builder, inputs  # noqa: E402

TOL = 1e-5

CASES = [
    pytest.param(name, config, id=f"{name}-{config}" if config else name)
    for name, fam in FAMILIES.items() if fam.embeds
    for config in (fam.test_configs or ((None,) if fam.weights == "none" else ()))
]


def test_every_embedding_family_has_a_contract_case():
    """A family that embeds must name a tiny config (or be computed): no family goes untested."""
    covered = {c.values[0] for c in CASES}
    assert covered == {n for n, f in FAMILIES.items() if f.embeds}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    builder = Builder(tmp_path_factory.mktemp("contract"))
    cache = {}

    def get(name, config):
        if (name, config) not in cache:
            fam = FAMILIES[name]
            spec = {"family": name, "towers": list(fam.towers_of_test(config))}
            if config is None:
                cache[name, config] = load_model(name, {**spec, "kind": "baseline"}, device="cpu")
            else:
                try:
                    folder = builder(config, fam.build_function())
                    cache[name, config] = load_model(name, {**spec, "kind": "untrained"}, model_dir=folder,
                                                     device="cpu")
                except ImportError as err:
                    # only a package the family declares as extra may be missing (e.g. PE-AV's
                    # image tower needs timm and torchvision); anything else is a failure
                    missing = [p for p in fam.extra if p.split("=")[0].lower() in str(err).lower()]
                    if not missing:
                        raise
                    pytest.skip(f"{name}/{config} needs the extra package(s) {missing}: {err}")
        return cache[name, config]

    return get


def _close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    scale = max(1.0, float(np.abs(b).max()))
    assert float(np.abs(a - b).max()) <= TOL * scale, (what, float(np.abs(a - b).max()))


@pytest.mark.parametrize("name,config", CASES)
def test_family_contract(adapters, name, config):
    fam = FAMILIES[name]
    adapter = adapters(name, config)
    towers = fam.towers_of_test(config)
    assert tuple(adapter.towers) == towers
    widths = {}
    for tower in adapter.towers:
        layers = adapter.layers(tower)
        # the layer list equals the declaration: hidden states "0".."N", then the named ones
        named = [n for n in layers if not re.fullmatch(r"\d+", n)]
        numbered = [n for n in layers if re.fullmatch(r"\d+", n)]
        if fam.all_named:
            assert layers == list(fam.named_layers)
        else:
            assert numbered == [str(i) for i in range(len(numbered))] and numbered
            assert named == fam.space_layers(tower, towers) + [n for n in fam.named_layers if n in named]
            assert set(named) <= set(fam.layer_names)
        items = inputs(tower)
        batch = adapter.embed(tower, items)
        assert list(batch) == layers
        again = adapter.embed(tower, items)
        for layer in layers:
            x = batch[layer]
            assert x.dtype == np.float32 and x.ndim == 2 and x.shape[0] == len(items), (layer, x.shape)
            assert np.isfinite(x).all(), layer
            assert np.array_equal(x, again[layer]), f"{layer}: not deterministic"
        for i, item in enumerate(items):  # batched equals one at a time
            alone = adapter.embed(tower, [item])
            for layer in layers:
                _close(batch[layer][i], alone[layer][0], f"{tower}/{layer} item {i}")
        reference = fam.reference_function()
        if reference is not None and fam.space_layers(tower, towers):
            own = reference(adapter, tower, items)
            assert set(own) == set(fam.space_layers(tower, towers))
            for layer, x in own.items():
                _close(batch[layer], x, f"{tower}/{layer} vs the model's own projection")
        for layer in fam.space_layers(tower, towers):
            widths.setdefault(layer, set()).add(batch[layer].shape[1])
    for space in fam.spaces:
        if not set(space.towers) <= set(towers):
            continue
        assert len(widths[space.layer]) == 1, (space.name, widths[space.layer])
    if fam.spaces and fam.architecture != "baseline":
        assert fam.reference, f"{name}: a family with shared spaces needs a reference projection for this test"
