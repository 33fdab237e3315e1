"""The family registry is the single source: the schema, the planner and prefetch agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from avprobe import plan, prefetch
from avprobe.models import FAMILIES as FACTORIES
from avprobe.models.registry import FAMILIES, Family, Space, spaces_of

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())


def test_schema_family_list_equals_the_registry():
    family = SCHEMA["properties"]["models"]["additionalProperties"]["properties"]["family"]
    enum = next(a["enum"] for a in family["anyOf"] if "enum" in a)
    assert sorted(enum) == sorted(FAMILIES)


def test_planner_reads_the_registry():
    assert set(plan.DENSE_FAMILIES) == {n for n, f in FAMILIES.items() if f.dense}
    assert set(plan.ASR_CAPABLE_FAMILIES) == {n for n, f in FAMILIES.items() if f.asr}
    assert set(plan.ASR_FAMILIES) == {n for n, f in FAMILIES.items() if not f.embeds}
    assert set(FACTORIES) == {n for n, f in FAMILIES.items() if f.embeds}


def test_registry_is_torch_free():
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'workflow/scripts'); import avprobe.plan, avprobe.prefetch; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_declaration_is_complete():
    configs = ROOT / "resources" / "model_configs"
    for name, fam in FAMILIES.items():
        assert fam.licence, name
        for cfg in fam.test_configs:
            assert (configs / cfg / "config.json").is_file() or (configs / cfg).is_dir(), (name, cfg)
        if fam.weights != "none":
            assert fam.builder, f"{name}: a network family needs an untrained-control builder"
        for space in fam.spaces:
            assert set(space.towers) <= set(fam.towers)


def test_bad_declarations_are_refused():
    with pytest.raises(ValueError, match="joins towers"):
        Family("x", "m:C", ("text",), "d", spaces=(Space("text_image", ("text", "image")),))
    with pytest.raises(ValueError, match="two or more"):
        Space("s", ("audio",))
    with pytest.raises(ValueError, match="architecture"):
        Family("x", "m:C", ("text",), "d", architecture="fused")


def _config(**models):
    return {"models": models, "analysis": {}}


def test_spaces_follow_configured_towers():
    clip = {"family": "clip", "towers": ["text", "image"]}
    assert [s.name for s in spaces_of(clip)] == ["text_image"]
    assert spaces_of({"family": "clip", "towers": ["image"]}) == ()
    plugin = {"family": "lab.mod:load", "towers": ["audio", "image"],
              "spaces": [{"name": "av", "towers": ["audio", "image"], "layer": "av"}]}
    assert spaces_of(plugin) == (Space("av", ("audio", "image"), "av"),)


def test_resolve_space_pairs_towers_only_inside_a_declared_space():
    cfg = _config(clip={"family": "clip", "towers": ["text", "image"]},
                  hub={"family": "hf_audio", "towers": ["audio"]},
                  two={"family": "lab.mod:load", "towers": ["audio", "image", "text"],
                       "spaces": [{"name": "audio_image", "towers": ["audio", "image"], "layer": "av"},
                                  {"name": "audio_image_b", "towers": ["audio", "image"], "layer": "av2"},
                                  {"name": "text_image", "towers": ["text", "image"]}]})
    assert plan.resolve_space(cfg, "clip", {"text", "image"}, "here") == Space("text_image", ("text", "image"))
    with pytest.raises(plan.ConfigError, match="has towers"):
        plan.resolve_space(cfg, "hub", {"audio", "image"}, "here")
    with pytest.raises(plan.ConfigError, match="several spaces .* name one with `space:`"):
        plan.resolve_space(cfg, "two", {"audio", "image"}, "here")
    assert plan.resolve_space(cfg, "two", {"audio", "image"}, "here", space="audio_image_b").layer == "av2"
    with pytest.raises(plan.ConfigError, match="no space 'nope'"):
        plan.resolve_space(cfg, "two", {"audio", "image"}, "here", space="nope")
    cfg["models"]["vit"] = {"family": "hf_image", "towers": ["image"]}
    cfg["models"]["bert"] = {"family": "hf_text", "towers": ["text"]}
    cfg["models"]["clip_img"] = {"family": "clip", "towers": ["image", "text"]}
    with pytest.raises(plan.ConfigError, match="unaligned: true"):
        plan.resolve_space(cfg, "two", {"audio", "text"}, "here")
    assert plan.resolve_space(cfg, "two", {"audio", "text"}, "here", unaligned=True) is None


def test_symbolism_and_retrieval_entries_name_their_space():
    cfg = _config(clip={"family": "clip", "towers": ["text", "image"]})
    entry = {"model": "clip", "words": "pseudoword_text", "images": "shapes"}
    assert plan.space_params(plan.symbolism_space(cfg, entry)) == {"space": "text_image", "space_layer": "joint"}
    assert plan.symbolism_name({**entry, "unaligned": True}).endswith("-unaligned")
    r = {"name": "r", "mode": "text", "model": "clip", "gallery": "scenes"}
    assert plan.retrieval_space(cfg, r).name == "text_image"


def test_prefetch_reads_the_weight_source_of_each_family(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    models = {
        "hub": {"family": "hf_audio", "kind": "pretrained", "source": "org/repo"},
        "local": {"family": "hf_audio", "kind": "pretrained", "source": str(tmp_path)},
        "ctrl": {"family": "clip", "kind": "untrained", "source": "resources/model_configs/clip-tiny"},
        "base": {"family": "logmel", "kind": "baseline"},
    }
    got = prefetch.pretrained_sources(models)
    assert set(got) == {"hub"} and got["hub"]["weights"] == "transformers"


def test_readme_family_table_is_generated_from_the_registry():
    from avprobe.models.registry import markdown_table

    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- families:start")
    body = text[text.index("\n", start) + 1:text.index("<!-- families:end -->")].strip()
    assert body == markdown_table(), ("README's family table is stale; replace it with the output of "
                                      "avprobe.models.registry.markdown_table():\n" + markdown_table())
