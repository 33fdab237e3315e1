"""The model families: one torch-free declaration each, the single source of what a family is.

The planner (:mod:`avprobe.plan`: config checks, which sets a model embeds, which pairs of towers
may be compared), the config schema (``config/schema.yaml``'s family list; ``tests/test_registry.py``
keeps the two equal), ``prefetch_models`` (:mod:`avprobe.prefetch`), the untrained-control builder
and the contract tests (``tests/test_contract.py``, parametrised over :data:`FAMILIES`) all read
this table. Adding a built-in family is one adapter module and one :class:`Family` entry below.

A family declares its **shared spaces** (:class:`Space`): which towers a trained head projects into
one embedding space, and the layer name that holds that projection in each of those towers.
Analyses that compare two towers (sound symbolism, retrieval, dense maps) pair them only inside a
declared space; hidden layers that no space aligns are compared only on explicit request and are
labelled ``unaligned`` (see :func:`avprobe.plan.resolve_space`).

Architecture kinds follow seed 000 (Tseng et al. 2024, §2): ``coordinated`` models encode each
modality with its own tower and align the towers contrastively (CLIP, CLAP, SpeechCLIP);
``joint`` models fuse the modalities in one network before the shared space; ``single`` is one
tower with no space; ``baseline`` is not a network.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

TOWERS = ("audio", "image", "text")
ARCHITECTURES = ("baseline", "single", "coordinated", "joint")
#: How weights reach a job: ``transformers`` (a hub repository or folder read by
#: ``from_pretrained``), ``checkpoint`` (single checkpoint files: a hub file or a pinned URL with
#: its sha256, see :mod:`avprobe.models.checkpoints`), ``none`` (computed features).
WEIGHT_SOURCES = ("transformers", "checkpoint", "none")


@dataclass(frozen=True)
class Space:
    """A shared embedding space of a family.

    ``name``: the value of the ``space`` column of every table row computed in it (e.g.
    ``text_image``). ``towers``: the towers projected into it. ``layer``: the layer name that holds
    the projection in each of those towers (``joint`` for a family with one space).
    """

    name: str
    towers: tuple[str, ...]
    layer: str = "joint"

    def __post_init__(self) -> None:
        bad = [t for t in self.towers if t not in TOWERS]
        if bad or len(self.towers) < 2:
            raise ValueError(f"space {self.name!r}: towers must be two or more of {TOWERS}, got {self.towers}")


@dataclass(frozen=True)
class Family:
    """Everything the workflow knows about one model family before loading it.

    Attributes
    ----------
    name: the config's ``models.<m>.family``.
    adapter: ``"module:Class"`` of the adapter under :mod:`avprobe.models`, imported lazily (so
        planning never imports torch).
    towers: the towers the family can have, in their natural order.
    spaces: its shared spaces (:class:`Space`).
    named_layers: layers selected by name besides the spaces' layers; every other layer of a
        network is a hidden state ``"0".."N"``.
    all_named: every layer is named (baselines): integer selectors index this list.
    config_keys: spec keys the family reads that the schema leaves to families.
    dense: the adapter exposes token/patch/frame features in its spaces (``Adapter.dense``).
    asr: its checkpoint can transcribe speech (may be named by ``asr.model``).
    embeds: False for a recogniser that embeds no set.
    architecture: one of :data:`ARCHITECTURES`.
    weights: one of :data:`WEIGHT_SOURCES`.
    builder: ``"module:function"`` building a seeded untrained control from an architecture
        config folder (``function(config_dir, out_dir, seed) -> Path``).
    reference: ``"module:function"`` computing a space layer with the model's *own* projection
        function, one item at a time (``function(adapter, tower, items) -> {layer: (B, D)}``); the
        contract test compares the adapter's layers with it.
    test_configs: architecture configs under ``resources/model_configs/`` the contract test builds.
    test_towers: ``(config, towers)`` for a test config that has only some of the family's towers
        (e.g. PE-AV's audio–text model, which needs no timm); the others have them all.
    companions: ``(spec_key, default hub id)`` of transformers repositories the family loads
        besides its own weights (e.g. the frozen HuBERT and CLIP under SpeechCLIP's branch);
        ``prefetch_models`` fetches them too.
    licence, hub, extra: what a user needs: the licence, example hub ids or files, packages
        beyond ``requirements.txt``.
    verified: what was checked in this repository's tests (offline, without the hub).
    """

    name: str
    adapter: str
    towers: tuple[str, ...]
    description: str
    spaces: tuple[Space, ...] = ()
    named_layers: tuple[str, ...] = ()
    all_named: bool = False
    config_keys: tuple[str, ...] = ()
    dense: bool = False
    asr: bool = False
    embeds: bool = True
    architecture: str = "single"
    weights: str = "transformers"
    builder: str = "build:build_untrained"
    reference: str | None = None
    test_configs: tuple[str, ...] = ()
    test_towers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    companions: tuple[tuple[str, str], ...] = ()
    licence: str = ""
    hub: tuple[str, ...] = ()
    extra: tuple[str, ...] = field(default_factory=tuple)
    verified: str = "tiny random weights of the real architecture (contract test)"

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"family {self.name!r}: architecture {self.architecture!r} not in {ARCHITECTURES}")
        if self.weights not in WEIGHT_SOURCES:
            raise ValueError(f"family {self.name!r}: weights {self.weights!r} not in {WEIGHT_SOURCES}")
        for space in self.spaces:
            missing = set(space.towers) - set(self.towers)
            if missing:
                raise ValueError(f"family {self.name!r}: space {space.name!r} joins towers {sorted(missing)} "
                                 f"the family does not have")

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Every layer selected by name: the spaces' layers, then the other named layers."""
        return tuple(dict.fromkeys([s.layer for s in self.spaces] + list(self.named_layers)))

    def space_layers(self, tower: str, towers: tuple[str, ...] | None = None) -> list[str]:
        """The space layers of one tower, in declaration order; with ``towers``, only those of the
        spaces whose towers are all among them (as :func:`spaces_of` restricts a configured model)."""
        return list(dict.fromkeys(s.layer for s in self.spaces if tower in s.towers
                                  and (towers is None or set(s.towers) <= set(towers))))

    def towers_of_test(self, config: str | None) -> tuple[str, ...]:
        """The towers the tiny test config ``config`` builds (see ``test_towers``)."""
        return dict(self.test_towers).get(config, self.towers)

    def factory(self) -> Callable:
        """``factory(name, spec, model_dir, device) -> Adapter`` (imports the adapter module)."""
        return _import(self.adapter, "avprobe.models")

    def build_function(self) -> Callable:
        return _import(self.builder, "avprobe.models")

    def reference_function(self) -> Callable | None:
        return _import(self.reference, "avprobe.models") if self.reference else None


def _import(target: str, package: str) -> Callable:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(f"{package}.{module}"), attr)


#: Space names list their towers in this order (``audio_text``, ``audio_image``, ``text_image``).
_NAME_ORDER = ("audio", "text", "image")


def space_name(*towers: str) -> str:
    return "_".join(sorted(towers, key=_NAME_ORDER.index))


def _one_space(*towers: str) -> tuple[Space, ...]:
    return (Space(space_name(*towers), tuple(towers), "joint"),)


_DECLARED = [
    Family("logmel", "baselines:LogMelAdapter", ("audio",), "log-mel spectrogram statistics (baseline)",
           named_layers=("mean", "meanstd"), all_named=True, architecture="baseline", weights="none",
           builder="", config_keys=("n_mels", "sample_rate", "n_fft", "hop_length", "fmin", "fmax"),
           licence="n/a (computed)", verified="known answers (filterbank equals transformers')"),
    Family("pixels", "baselines:PixelsAdapter", ("image",), "downsampled pixels (baseline)",
           named_layers=("grey", "rgb"), all_named=True, architecture="baseline", weights="none",
           builder="", config_keys=("size",), licence="n/a (computed)", verified="known answers"),
    Family("hf_audio", "hf:HFAudioAdapter", ("audio",), "HuBERT, wav2vec 2.0, WavLM, data2vec-audio",
           config_keys=("pad_batches",), test_configs=("hubert-tiny", "wav2vec2-tiny"),
           licence="per checkpoint (HuBERT, wav2vec 2.0: Apache-2.0 / MIT)",
           hub=("facebook/hubert-base-ls960", "facebook/wav2vec2-base", "microsoft/wavlm-base-plus")),
    Family("whisper_encoder", "hf:WhisperEncoderAdapter", ("audio",), "Whisper's encoder",
           asr=True, config_keys=("max_new_tokens", "num_beams", "language", "task"),
           test_configs=("whisper-tiny-random",), licence="MIT", hub=("openai/whisper-base",)),
    Family("whisper_asr", "asr:WhisperASR", ("audio",), "a Whisper speech recogniser (asr.model only)",
           asr=True, embeds=False, config_keys=("max_new_tokens", "num_beams", "language", "task"),
           licence="MIT", hub=("openai/whisper-base",)),
    Family("ast", "hf:ASTAdapter", ("audio",), "Audio Spectrogram Transformer",
           test_configs=("ast-tiny",), licence="BSD-3-Clause",
           hub=("MIT/ast-finetuned-audioset-10-10-0.4593",)),
    Family("clap", "hf:CLAPAdapter", ("audio", "text"), "CLAP (HTSAT audio + RoBERTa text)",
           spaces=_one_space("audio", "text"), architecture="coordinated", reference="hf:reference_joint",
           test_configs=("clap-tiny",), licence="Apache-2.0", hub=("laion/clap-htsat-unfused",)),
    Family("clip", "hf:CLIPAdapter", ("text", "image"), "CLIP", spaces=_one_space("text", "image"),
           dense=True, architecture="coordinated", reference="hf:reference_joint",
           test_configs=("clip-tiny",), licence="MIT", hub=("openai/clip-vit-base-patch32",)),
    Family("siglip", "hf:SigLIPAdapter", ("text", "image"), "SigLIP", spaces=_one_space("text", "image"),
           architecture="coordinated", reference="hf:reference_joint", test_configs=("siglip-tiny",),
           licence="Apache-2.0", hub=("google/siglip-base-patch16-224",)),
    Family("pe_av", "pe_av:PEAVAdapter", ("audio", "image", "text"),
           "PE-AV, Meta's Perception Encoder audio-visual (an image is a one-frame video)",
           # one audio head and one video head serve two spaces each; the text tower has a head
           # per space (PeAudioVideoModel.forward's logits_audio_text, _video_text, _audio_video)
           spaces=(Space("audio_text", ("audio", "text"), "audio_text"),
                   Space("text_image", ("text", "image"), "text_image"),
                   Space("audio_image", ("audio", "image"), "audio_image")),
           architecture="coordinated", reference="pe_av:reference_spaces",
           test_configs=("pe-av-audio-tiny", "pe-av-tiny"),
           test_towers=(("pe-av-audio-tiny", ("audio", "text")),),
           licence="Apache-2.0",
           hub=("facebook/pe-av-small", "facebook/pe-av-base", "facebook/pe-av-large"),
           extra=("timm", "torchvision")),
    Family("embedding_gemma2", "embedding_gemma2:EmbeddingGemma2Adapter", ("audio", "image", "text"),
           "EmbeddingGemma 2: images and audio enter one Gemma backbone as soft tokens",
           # one space: each pair of towers is declared so that a model configured with two
           # towers keeps it (spaces_of), and all three share the layer joint
           spaces=tuple(Space(space_name(*p), p, "joint")
                        for p in (("audio", "text"), ("text", "image"), ("audio", "image"))),
           architecture="joint", reference="embedding_gemma2:reference_joint",
           test_configs=("embedding-gemma2-tiny",), licence="see the model card (not checked here: no hub access)",
           hub=("google/embeddinggemma-2",)),
    Family("hf_image", "hf:HFImageAdapter", ("image",), "DINOv2, ViT and other image encoders",
           test_configs=("dinov2-tiny", "vit-tiny"), licence="per checkpoint (DINOv2: Apache-2.0)",
           hub=("facebook/dinov2-small", "google/vit-base-patch16-224-in21k")),
    Family("densav", "densav:DenseAVAdapter", ("audio", "image"),
           "DenseAV (HuBERT + DINO ViT with aligners; dense audio-frame x image-patch similarity)",
           spaces=_one_space("audio", "image"), dense=True, architecture="coordinated", weights="checkpoint",
           builder="densav:build_untrained", reference="densav:reference_joint", test_configs=("densav-tiny",),
           config_keys=("heads",), licence="MIT",
           hub=("hf://mhamilton723/DenseAV-sound/model.safetensors",
                "hf://mhamilton723/DenseAV-language/model.safetensors",
                "hf://mhamilton723/DenseAV-sound-language/model.safetensors")),
    Family("beats", "beats:BEATsAdapter", ("audio",), "BEATs (self-supervised audio transformer)",
           named_layers=("logits",), weights="checkpoint", builder="beats:build_untrained",
           test_configs=("beats-tiny",), licence="MIT",
           hub=("BEATs_iter3_plus_AS2M.pt", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt")),
    Family("yamnet", "yamnet:YAMNetAdapter", ("audio",), "YAMNet (AudioSet CNN, torch port)",
           named_layers=("logits",), weights="checkpoint", builder="yamnet:build_untrained",
           config_keys=("patch_hop_seconds",), test_configs=("yamnet-tiny",), licence="MIT",
           hub=("yamnet.pth (github w-hc/torch_audioset release v0.1)",)),
    Family("imagebind", "imagebind:ImageBindAdapter", ("audio", "image", "text"),
           "ImageBind (audio, image and text towers; non-commercial licence)",
           spaces=_one_space("audio", "image", "text"), architecture="coordinated", weights="checkpoint",
           builder="imagebind:build_untrained", reference="imagebind:reference_joint",
           config_keys=("tokenizer",), test_configs=("imagebind-tiny",),
           companions=(("tokenizer", "openai/clip-vit-base-patch32"),),
           licence="CC-BY-NC-SA 4.0 (non-commercial)",
           hub=("https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",)),
    Family("hf_text", "hf:HFTextAdapter", ("text",), "BERT-like text encoders",
           test_configs=("bert-tiny",), licence="per checkpoint (all-MiniLM-L6-v2: Apache-2.0)",
           hub=("sentence-transformers/all-MiniLM-L6-v2",),
           verified="tiny random weights (contract test); real all-MiniLM-L6-v2 weights from the package index"),
    # Speech branch trained into frozen CLIP's joint space: speech, text and images share it.
    Family("speechclip", "speechclip:SpeechCLIPAdapter", ("audio", "text", "image"),
           "SpeechCLIP (frozen HuBERT + trained speech branch into frozen CLIP; parallel or cascaded)",
           spaces=_one_space("audio", "text", "image"), named_layers=("weighted_sum",),
           config_keys=("variant", "hubert", "clip", "pad_batches"),
           architecture="coordinated", weights="checkpoint", builder="speechclip:build_untrained",
           reference="speechclip:reference_joint",
           test_configs=("speechclip-tiny-parallel", "speechclip-tiny-cascaded"),
           companions=(("hubert", "facebook/hubert-base-ls960"), ("clip", "openai/clip-vit-base-patch32")),
           licence="BSD-3-Clause (SpeechCLIP code and checkpoints); HuBERT: MIT (fairseq); CLIP: MIT",
           hub=("hf://speechclip/models/base/flickr/parallel/epoch_131-step_15443-val_recall_mean_1_36.0100.ckpt",
                "facebook/hubert-base-ls960", "openai/clip-vit-base-patch32")),
]

#: family name → declaration, in declaration order.
FAMILIES: dict[str, Family] = {f.name: f for f in _DECLARED}


def markdown_table() -> str:
    """The README's table of families (``tests/test_registry.py`` keeps the README equal to it)."""
    lines = ["| family | towers | shared spaces (layer) | architecture | weights | licence | needs | verified here |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for f in FAMILIES.values():
        spaces = ", ".join(f"{s.name} ({s.layer})" for s in f.spaces) or "–"
        weights = {"none": "computed", "transformers": "hub repository", "checkpoint": "checkpoint file"}[f.weights]
        if f.hub:
            weights += ": " + ", ".join(f"`{h}`" for h in f.hub)
        needs = ", ".join(f"`{e}`" for e in f.extra) or "–"
        lines.append(f"| `{f.name}` ({f.description}) | {', '.join(f.towers)} | {spaces} | {f.architecture} | "
                     f"{weights} | {f.licence} | {needs} | {f.verified} |")
    return "\n".join(lines)


def register(family: Family) -> None:
    """Add a built-in family (used by this module's table; plugins need no registration)."""
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered")
    FAMILIES[family.name] = family


def builder_for(family: str) -> Callable:
    """The untrained-control builder of a family (transformers' for plugins)."""
    fam = FAMILIES.get(family)
    if fam is not None and not fam.builder:
        raise ValueError(f"family {family!r} has no weights to build ({fam.description})")
    return _import(fam.builder if fam else "build:build_untrained", "avprobe.models")


def is_plugin(family: str) -> bool:
    """A ``"package.module:function"`` entry point rather than a built-in family."""
    return family not in FAMILIES and ":" in family


def plugin_spaces(spec: dict) -> tuple[Space, ...]:
    """The spaces a plugin's config entry declares (``spaces: [{name, towers, layer}]``)."""
    return tuple(Space(s["name"], tuple(s["towers"]), s.get("layer", "joint")) for s in spec.get("spaces") or [])


def spaces_of(spec: dict) -> tuple[Space, ...]:
    """The shared spaces of a configured model, restricted to the towers it is configured with."""
    family = str(spec.get("family", ""))
    declared = FAMILIES[family].spaces if family in FAMILIES else plugin_spaces(spec)
    towers = set(spec.get("towers") or ())
    return tuple(s for s in declared if set(s.towers) <= towers)
