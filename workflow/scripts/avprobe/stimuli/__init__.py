"""The stimulus stage of avprobe: every set the analyses probe, made offline and reproducibly.

- :mod:`.pseudowords`: the 648-word kiki/bouba inventory and the ``pseudoword_text`` set
- :mod:`.tts`, :mod:`.espeak_native`: text-to-speech engines (espeak-ng through its C API;
  piper neural voices through onnxruntime, noise off)
- :mod:`.audio`: resampling, trimming and loudness normalisation shared by all speech
- :mod:`.speech`: the spoken sets ``pseudowords`` and ``captions``
- :mod:`.shapes`: sharp and round shape images
- :mod:`.manifests`: helpers every manifest writer shares
- :mod:`.scenes`: scene images and their ``caption_text`` captions
- :mod:`.impacts`: the ``impacts`` set (modal synthesis with physical labels) and the
  listeners' ratings schema
- :mod:`.corpora`: real corpora (Flickr8k Audio Captions, SpokenCOCO) as ``<corpus>_*`` sets
- :mod:`.qc`: the per-clip QC table (``qc.parquet``) of every audio set
- :mod:`.intelligibility`: speech QC with a real recogniser (Whisper base via CTranslate2):
  caption WER, pseudoword CER and onset survival per clip and per voice; the voice bar
"""
