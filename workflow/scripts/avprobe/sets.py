"""The stimulus sets the pipeline knows, and the one modality each set is made of."""

#: set name → modality of its stimuli (the tower of a model that can embed it).
#: These are synthesised by the default study, so every one is always buildable, except the
#: transcript sets of ASR_SETS, which exist when the config names an ASR model.
SET_MODALITY = {
    "pseudowords": "audio",  # one clip per word × voice
    "pseudoword_text": "text",  # one row per word × prompt template
    "shapes": "image",
    "scenes": "image",
    "captions": "audio",  # spoken scene captions, 5 per scene image
    "caption_text": "text",  # the same captions as text
    "caption_asr": "text",  # ASR transcripts of the spoken captions (only when `asr` is configured)
    # ASR transcripts of the spoken pseudowords: the cascade as a model of sound symbolism
    # (speech → recogniser → text tower, BrewCLIP's pipeline applied to seed 000)
    "pseudoword_asr": "text",
    "impacts": "audio",  # modal-synthesis impact sounds with physical labels (seed 001)
    # adjective prompts labelled round / sharp: text anchors for sound symbolism in an
    # audio–text space (CLAP), as Alper & Averbuch-Elor's anchors
    "shape_adjectives": "text",
}

#: Transcript sets → the spoken set they transcribe (rule ``transcribe``, seed 003's cascade).
#: They share the spoken set's stimulus ids and labels; ``text`` is the ASR transcript. They are
#: built, and embedded, only when ``asr.model`` names a speech recogniser and an analysis reads
#: them (see avprobe.plan.extractions).
ASR_SETS = {"caption_asr": "captions", "pseudoword_asr": "pseudowords"}

#: Sets built and embedded only when an analysis reads them (avprobe.plan.on_demand_sets_used):
#: the transcript sets, and the text anchors.
ON_DEMAND_SETS = (*ASR_SETS, "shape_adjectives")

#: The form in which each words set presents the pseudowords to a model (seed 000's speech vs
#: text; the cascade hears them through a recogniser, then reads the transcript).
WORD_FORMS = {"pseudowords": "speech", "pseudoword_text": "text", "pseudoword_asr": "cascade"}

#: Sets whose rows carry labels that RSA and probes test: sharp/round ``label``, or the impact
#: sounds' physical labels (IMPACT_LABELS, plus size as a continuous attribute).
LABELLED_SETS = ("pseudowords", "pseudoword_text", "shapes", "impacts")

#: Categorical physical labels of the ``impacts`` set (manifest columns; seed 001's
#: dimensions, and the ``dimension`` names of a listeners' ratings table).
IMPACT_LABELS = ("material", "hollowness", "extension")

#: Real corpora (avprobe.stimuli.corpora), each giving three sets <corpus>_<suffix>. They
#: exist only when the user configures the corpus under stimuli.corpora, so they are kept
#: out of SET_MODALITY (the default study builds every set there); see corpus_sets().
CORPUS_SET_MODALITY = {
    f"{corpus}_{suffix}": modality
    for corpus in ("flickr8k", "spokencoco")
    for suffix, modality in (("images", "image"), ("captions", "audio"), ("caption_text", "text"))
}


def corpus_sets(config: dict) -> dict[str, str]:
    """set name → modality of the corpus sets the config asks for (stimuli.corpora)."""
    corpora = (config.get("stimuli") or {}).get("corpora") or {}
    return {s: m for s, m in CORPUS_SET_MODALITY.items() if any(s.startswith(f"{c}_") for c in corpora)}


def modality(set_name: str) -> str:
    """The modality of any known set, synthesised or corpus."""
    if set_name in SET_MODALITY:
        return SET_MODALITY[set_name]
    if set_name in CORPUS_SET_MODALITY:
        return CORPUS_SET_MODALITY[set_name]
    raise KeyError(f"unknown set {set_name!r}; sets are {sorted(SET_MODALITY | CORPUS_SET_MODALITY)}")
