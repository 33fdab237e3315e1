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


if __name__ == "__main__":
    main()
