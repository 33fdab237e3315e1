"""Write the tiny architecture configs in this folder (run once; the output is committed).

Each sub-folder is what a hub repository holds, minus the weights: ``config.json`` plus the
processor files (feature extractor, image processor, tokenizer). ``build_untrained_model``
turns one into a seeded random-init model with ``save_pretrained``, and extraction then loads
it with ``from_pretrained(path)`` exactly as it would load a hub id.

Tokenizers are character-level, built deterministically with the ``tokenizers`` library from a
fixed alphabet, so nothing is downloaded. Usage::

    .venv/bin/python resources/model_configs/make_configs.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALPHABET = list("abcdefghijklmnopqrstuvwxyz0123456789 .,;:!?'-\"()")
SR = 16000


def char_tokenizer(out: Path, specials: list[str], template: tuple[str, str] | None, pad: str,
                   unk: str, model_max_length: int, extra: dict | None = None) -> dict[str, int]:
    """A lower-casing character-level tokenizer saved as tokenizer.json + tokenizer_config.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(specials + ALPHABET)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    if template is not None:
        first, last = template
        pieces = ([first] if first else []) + ["$A"] + ([last] if last else [])
        tok.post_processor = processors.TemplateProcessing(
            single=" ".join(pieces),
            special_tokens=[(t, vocab[t]) for t in (first, last) if t],
        )
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "pad_token": pad,
        "unk_token": unk,
        "clean_up_tokenization_spaces": False,
        "padding_side": "right",
    }
    cfg.update(extra or {})
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return vocab


def save(config, out: Path, *processors) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    for proc in processors:
        proc.save_pretrained(out)


def wav2vec_like(name: str, config_cls, norm: str, mask: bool, **kw) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    common = dict(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
        conv_dim=(32, 32, 32, 32), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=32,
        mask_time_prob=0.0, layerdrop=0.0,
    )
    if norm is not None:
        common["feat_extract_norm"] = norm
        common["do_stable_layer_norm"] = norm == "layer"
    common.update(kw)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0,
                                  do_normalize=True, return_attention_mask=mask)
    save(config_cls(**common), HERE / name, fe)


def main() -> None:
    import transformers as tf

    # ---- audio encoders ------------------------------------------------------------------
    wav2vec_like("hubert-tiny", tf.HubertConfig, "layer", True, conv_bias=True)
    wav2vec_like("wav2vec2-tiny", tf.Wav2Vec2Config, "group", False)  # like wav2vec2-base
    wav2vec_like("wavlm-tiny", tf.WavLMConfig, "layer", True, num_buckets=32,
                 max_bucket_distance=80)
    wav2vec_like("data2vec-audio-tiny", tf.Data2VecAudioConfig, None, True,
                 num_conv_pos_embeddings=3, conv_pos_kernel_size=5)

    # Whisper: chunk of 4 s (400 mel frames, 200 encoder positions) instead of 30 s.
    out = HERE / "whisper-tiny-random"
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                "<|translate|>", "<|notimestamps|>"]
    vocab = char_tokenizer(out, specials, None, pad="<|endoftext|>", unk="<|endoftext|>",
                           model_max_length=64,
                           extra={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    cfg = tf.WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=80, d_model=64, encoder_layers=2,
        encoder_attention_heads=4, decoder_layers=2, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=200,
        max_target_positions=64, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=sot, suppress_tokens=[], begin_suppress_tokens=[],
        architectures=["WhisperForConditionalGeneration"],
    )
    fe = tf.WhisperFeatureExtractor(feature_size=80, sampling_rate=SR, hop_length=160,
                                    chunk_length=4, n_fft=400)
    save(cfg, out, fe)
    gen = {
        "decoder_start_token_id": sot, "bos_token_id": eot, "eos_token_id": eot,
        "pad_token_id": eot, "max_length": 64, "no_timestamps_token_id":
        vocab["<|notimestamps|>"], "is_multilingual": False, "begin_suppress_tokens": [],
        "suppress_tokens": [], "forced_decoder_ids": None,
    }
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")

    cfg = tf.ASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, patch_size=16, frequency_stride=10,
                       time_stride=10, max_length=64, num_mel_bins=32)
    fe = tf.ASTFeatureExtractor(feature_size=1, sampling_rate=SR, num_mel_bins=32, max_length=64)
    save(cfg, HERE / "ast-tiny", fe)

    out = HERE / "clap-tiny"
    out.mkdir(parents=True, exist_ok=True)
    vocab = char_tokenizer(out, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], ("<s>", "</s>"),
                           pad="<pad>", unk="<unk>", model_max_length=64,
                           extra={"bos_token": "<s>", "eos_token": "</s>"})
    cfg = tf.ClapConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=64 + 2, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2, projection_dim=16),
        audio_config=dict(spec_size=64, num_mel_bins=16, window_size=4, patch_size=4,
                          patch_stride=(4, 4), depths=[1, 1], num_attention_heads=[2, 4],
                          patch_embeds_hidden_size=16, hidden_size=32, num_hidden_layers=2,
                          projection_dim=16, enable_fusion=False),
        projection_dim=16,
    )
    fe = tf.ClapFeatureExtractor(feature_size=16, sampling_rate=SR, hop_length=160,
                                 max_length_s=2, fft_window_size=400, padding="repeatpad",
                                 truncation="rand_trunc", frequency_min=50, frequency_max=8000)
    save(cfg, out, fe)

    # ---- image-text and image models ------------------------------------------------------
    out = HERE / "clip-tiny"
    out.mkdir(parents=True, exist_ok=True)
    vocab = char_tokenizer(out, ["<|startoftext|>", "<|endoftext|>", "<|pad|>", "<|unk|>"],
                           ("<|startoftext|>", "<|endoftext|>"), pad="<|pad|>", unk="<|unk|>",
                           model_max_length=77,
                           extra={"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"})
    cfg = tf.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=77,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|pad|>"], projection_dim=32),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, image_size=64, patch_size=16, projection_dim=32),
        projection_dim=32,
    )
    ip = tf.CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    save(cfg, out, ip)

    out = HERE / "siglip-tiny"
    out.mkdir(parents=True, exist_ok=True)
    vocab = char_tokenizer(out, ["<pad>", "</s>", "<unk>"], (None, "</s>"), pad="<pad>",
                           unk="<unk>", model_max_length=32, extra={"eos_token": "</s>"})
    cfg = tf.SiglipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32,
                         pad_token_id=0, bos_token_id=None, eos_token_id=1,
                         projection_size=32),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
    )
    ip = tf.SiglipImageProcessor(size={"height": 32, "width": 32})
    save(cfg, out, ip)

    cfg = tf.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          mlp_ratio=2, image_size=32, patch_size=8)
    ip = tf.BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                              do_convert_rgb=True, image_mean=[0.485, 0.456, 0.406],
                              image_std=[0.229, 0.224, 0.225])
    save(cfg, HERE / "dinov2-tiny", ip)

    cfg = tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, image_size=32, patch_size=8)
    ip = tf.ViTImageProcessor(size={"height": 32, "width": 32})
    save(cfg, HERE / "vit-tiny", ip)

    # ---- text ----------------------------------------------------------------------------
    out = HERE / "bert-tiny"
    out.mkdir(parents=True, exist_ok=True)
    vocab = char_tokenizer(out, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                           ("[CLS]", "[SEP]"), pad="[PAD]", unk="[UNK]", model_max_length=64,
                           extra={"cls_token": "[CLS]", "sep_token": "[SEP]",
                                  "mask_token": "[MASK]"})
    cfg = tf.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                        pad_token_id=0)
    save(cfg, out)

    speechclip_tiny()
    pe_av_configs()
    embedding_gemma2_config()


def speechclip_tiny() -> None:
    """SpeechCLIP controls (avprobe/models/speechclip.py): a SpeechCLIP config.json (the original
    YAML's nested layout under ``original_config``) with its tiny ``hubert/`` and ``clip/``
    folders. parallel pairs a base-like HuBERT (group-norm feature encoder, post-norm) with the
    base settings; cascaded a large-like one (layer-norm, pre-norm, normalised waveform and
    layers). CLIP's text width equals its joint width, as in ViT-B/32 and ViT-L/14, because the
    parallel branch projects to the token-embedding width (the original's ``subword_embd_dim``)."""
    import transformers as tf

    for variant, norm in (("parallel", "group"), ("cascaded", "layer")):
        out = HERE / f"speechclip-tiny-{variant}"
        hub = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                   conv_dim=(16, 16, 16, 16), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4),
                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=32,
                   mask_time_prob=0.0, layerdrop=0.0, feat_extract_norm=norm,
                   do_stable_layer_norm=norm == "layer", conv_bias=norm == "layer")
        fe = tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0,
                                         do_normalize=norm == "layer", return_attention_mask=norm == "layer")
        save(tf.HubertConfig(**hub), out / "hubert", fe)
        clip_dir = out / "clip"
        clip_dir.mkdir(parents=True, exist_ok=True)
        vocab = char_tokenizer(clip_dir, ["<|startoftext|>", "<|endoftext|>", "<|pad|>", "<|unk|>"],
                               ("<|startoftext|>", "<|endoftext|>"), pad="<|pad|>", unk="<|unk|>",
                               model_max_length=77,
                               extra={"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"})
        cfg = tf.CLIPConfig(
            text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                             bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                             pad_token_id=vocab["<|pad|>"], projection_dim=32),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, image_size=32, patch_size=8, projection_dim=32),
            projection_dim=32,
        )
        ip = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        save(cfg, clip_dir, ip)
        # The reduced vocabulary, ordered like the original's byfreq files: row 0 = a padding id
        # (CLIP id 0 there), row 1 = a frequent token, rows 2 and 3 = start and end of text.
        first = [vocab["<|pad|>"], vocab["a"], vocab["<|startoftext|>"], vocab["<|endoftext|>"]]
        ids = first + [i for i in sorted(vocab.values()) if i not in first]
        large = norm == "layer"
        branch = {"transformer_args": {"n_layers": 1, "d_model": 32, "dim_feedforward": 64,
                                       "dropout": 0.1, "activation": "gelu", "layer_norm_eps": 1e-5,
                                       "batch_first": True, "norm_first": False}}
        if variant == "parallel":
            branch["transformer_type"] = "TransformerEncoder"
            branch["transformer_args"]["nhead"] = 4
            branch["need_projection"] = True
        else:
            branch["type"] = "KW_CascadedBranch"
            branch["transformer_type"] = "MultiheadAttentionAndNorm"
            branch["transformer_args"]["nhead"] = 1
            branch["keyword"] = {"number": 8, "batchnorms": {"type": "eachKw", "std_scale": 1.0,
                                                             "learnable": True, "parallel": True}}
            branch["vq"] = {"bn_before_vq": True, "type": "SimpleVectorQuantizer",
                            "args": {"temp": "fixed=0.1", "time_first": True, "use_gumbel": False, "hard": True}}
        config = {
            "model_type": "speechclip",
            "variant": variant,
            "hubert": "hubert",
            "clip": "clip",
            "normalize_waveform": large,
            "normalize_hiddenstates": large,
            "vocabulary": ids,
            "original_config": {
                "model_settings": {f"{variant}_branch": branch},
                "audio_encoder": {"type": "FairseqHubert", "name": f"hubert-tiny-{'large' if large else 'base'}-like",
                                  "feat_select_idx": "weighted_sum", "normalize_hiddenstates": large},
                "clip": {"name": "clip-tiny"},
            },
        }
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


# ---- PE-AV (Meta's Perception Encoder audio-visual) ------------------------------------------
#: The tiny PE-AV towers: a DAC codec front end (hop 320 samples at 16 kHz: 50 frames a second;
#: its full-rate convolutions are most of the cost, hence 2 channels: ~30 ms a clip on one core)
#: into a 2-layer transformer (audio), timm's PE-core ViT on 28x28 frames into a 2-layer frame
#: transformer (image = a one-frame video), and a 2-layer ModernBERT (text).
PE_AUDIO = dict(
    dac_config=dict(encoder_hidden_size=2, downsampling_ratios=[2, 4, 5, 8], decoder_hidden_size=4,
                    n_codebooks=2, codebook_size=16, codebook_dim=8, hidden_size=32),
    hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
)
# transformers 5.24 reads a nested timm config back with 2 labels whatever num_classes says (only
# num_labels / id2label count, and to_dict writes neither), so the tiny frame embedding is 2-wide
# once loaded; the real checkpoints are unaffected only if their configs carry id2label.
PE_VIDEO = dict(
    vision_config=dict(architecture="vit_pe_core_large_patch14_336", num_classes=16, num_labels=16,
                       model_args=dict(embed_dim=32, depth=2, num_heads=2, img_size=(28, 28))),
    hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
)


def pe_av_text(out: Path) -> dict:
    """ModernBERT's [CLS] text [SEP] framing on the character alphabet; the model reads the
    [CLS] position, so the template must put it first."""
    vocab = char_tokenizer(out, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], ("[CLS]", "[SEP]"),
                           pad="[PAD]", unk="[UNK]", model_max_length=64,
                           extra={"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"})
    return dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64, global_attn_every_n_layers=1,
                pad_token_id=vocab["[PAD]"], cls_token_id=vocab["[CLS]"], sep_token_id=vocab["[SEP]"],
                bos_token_id=vocab["[CLS]"], eos_token_id=vocab["[SEP]"])


def pe_av_configs() -> None:
    """``pe-av-tiny`` (PeAudioVideoModel: audio, image, text; needs timm and torchvision) and
    ``pe-av-audio-tiny`` (PeAudioModel: audio and text only; plain transformers)."""
    import transformers as tf

    fe = tf.PeAudioFeatureExtractor(sampling_rate=SR, hop_length=320)

    out = HERE / "pe-av-audio-tiny"
    out.mkdir(parents=True, exist_ok=True)
    cfg = tf.PeAudioConfig(text_config=dict(model_type="modernbert", **pe_av_text(out)),
                           audio_config=PE_AUDIO, architectures=["PeAudioModel"])
    save(cfg, out, fe)

    out = HERE / "pe-av-tiny"
    out.mkdir(parents=True, exist_ok=True)
    encoder = dict(audio_config=PE_AUDIO, video_config=PE_VIDEO, hidden_size=32, intermediate_size=48,
                   num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                   max_position_embeddings=512)
    cfg = tf.PeAudioVideoConfig(text_config=dict(model_type="modernbert", **pe_av_text(out)),
                                audio_video_config=encoder, architectures=["PeAudioVideoModel"])
    save(cfg, out, fe)
    # The video processor needs torchvision to be built, so its file is written by hand: what
    # PeVideoVideoProcessor.save_pretrained writes, at 28x28 (the real models: 336 or 224).
    vp = {
        "video_processor_type": "PeVideoVideoProcessor", "processor_class": "PeAudioVideoProcessor",
        "do_resize": True, "size": {"height": 28, "width": 28}, "resample": 2,
        "do_center_crop": False, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True, "do_sample_frames": False,
    }
    (out / "video_preprocessor_config.json").write_text(json.dumps(vp, indent=2) + "\n")


# ---- EmbeddingGemma 2 ------------------------------------------------------------------------
EG2_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_image>", "<end_of_image>",
                "<image_soft_token>", "<|video|>", "<start_of_audio>", "<end_of_audio>", "<audio_soft_token>"]


def embedding_gemma2_config() -> None:
    """``embedding-gemma2-tiny``: a 2-layer Gemma backbone (32 wide, embedding 24) with a 2-layer
    Gemma 4 vision tower (4-pixel patches, at most 70 soft tokens an image) and a 2-layer audio
    conformer. The tokenizer knows the placeholder tokens as special tokens and wraps every
    prompt in ``<bos> … <eos>`` as Gemma's does; one ``processor_config.json`` holds the feature
    extractor, image and video processors (they would all write preprocessor_config.json). The
    video processor needs torchvision to be built, so its entry is written out by hand."""
    import transformers as tf
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    out = HERE / "embedding-gemma2-tiny"
    out.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(EG2_SPECIALS + ALPHABET)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in EG2_SPECIALS])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    tok.save(str(out / "tokenizer.json"))
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 4096, "pad_token": "<pad>",
            "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>", "mask_token": "<mask>",
            "padding_side": "right", "clean_up_tokenization_spaces": False,
            "extra_special_tokens": {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                                     "eoi_token": "<end_of_image>", "audio_token": "<audio_soft_token>",
                                     "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}}
    (out / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2) + "\n")
    cfg = tf.EmbeddingGemma2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, global_head_dim=16,
                         hidden_size_per_layer_input=8, embedding_dim=24, max_position_embeddings=4096,
                         sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                         pad_token_id=vocab["<pad>"], eos_token_id=vocab["<eos>"], bos_token_id=vocab["<bos>"]),
        vision_config=dict(model_type="gemma4_vision", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=2, head_dim=16, patch_size=4,
                           pooling_kernel_size=2),
        # the first subsampling conv must keep 128 channels (= mel bins: the projection after it
        # assumes so); the second is cut from 32 to 4, the audio tower's main CPU cost
        audio_config=dict(model_type="gemma4_audio", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          output_proj_dims=32, subsampling_conv_channels=[128, 4]),
        boi_token_id=vocab["<start_of_image>"], eoi_token_id=vocab["<end_of_image>"],
        image_token_id=vocab["<image_soft_token>"], video_token_id=vocab["<|video|>"],
        boa_token_id=vocab["<start_of_audio>"], eoa_token_index=vocab["<end_of_audio>"],
        audio_token_id=vocab["<audio_soft_token>"], architectures=["EmbeddingGemma2Model"])
    cfg.save_pretrained(out)
    fe = tf.Gemma4AudioFeatureExtractor()
    ip = tf.Gemma4ImageProcessorPil(patch_size=4, pooling_kernel_size=2, max_soft_tokens=70)
    vp = {"video_processor_type": "Gemma4VideoProcessor", "do_convert_rgb": True, "do_normalize": True,
          "do_rescale": True, "do_resize": True, "do_sample_frames": True, "image_mean": [0.0, 0.0, 0.0],
          "image_std": [1.0, 1.0, 1.0], "max_soft_tokens": 70, "num_frames": 32, "patch_size": 4,
          "pooling_kernel_size": 2, "resample": 3, "rescale_factor": 1 / 255, "return_metadata": False}
    proc = {"processor_class": "EmbeddingGemma2Processor", "image_seq_length": 70, "audio_seq_length": 750,
            "audio_ms_per_token": 40, "feature_extractor": json.loads(fe.to_json_string()),
            "image_processor": json.loads(ip.to_json_string()), "video_processor": vp}
    (out / "processor_config.json").write_text(json.dumps(proc, indent=2) + "\n")


if __name__ == "__main__":
    main()
