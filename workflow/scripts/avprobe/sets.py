"""The stimulus sets the pipeline knows, and the one modality each set is made of."""

#: set name → modality of its stimuli (the tower of a model that can embed it).
SET_MODALITY = {
    "pseudowords": "audio",  # one clip per word × voice
    "pseudoword_text": "text",  # one row per word × prompt template
    "shapes": "image",
    "scenes": "image",
    "captions": "audio",  # spoken scene captions, 5 per scene image
    "caption_text": "text",  # the same captions as text
}

#: Sets whose rows carry a sharp/round ``label`` (RSA and probes run on these).
LABELLED_SETS = ("pseudowords", "pseudoword_text", "shapes")
