"""Real spoken-caption corpora as stimulus sets: Flickr8k Audio Captions and SpokenCOCO.

The user downloads a corpus and points the config at its files (``stimuli.corpora``);
:func:`import_corpus` writes three manifests with the columns of the synthetic sets:
``<corpus>_images`` (like ``scenes``), ``<corpus>_captions`` (like ``captions``: audio, with
``image_id``, ``text``, ``voice`` = speaker) and ``<corpus>_caption_text`` (like
``caption_text``). Captions and caption texts share ids (``<image_id>-c<k>``); ``image_id``
is an images-set ``stimulus_id``. Nothing is copied or re-encoded: ``path`` points at the
corpus's own files (relative to the manifest's folder, as the contracts require), so the
audio keeps its own rate and sample format (``sample_rate`` says which; models resample).

:func:`check_corpus_config` parses every configured manifest and checks that every file
it names exists, raising :class:`CorpusConfigError` with one message that names the config
key: call it when the workflow is parsed, so a bad corpus fails before any job runs.

File layouts (as distributed; every path is configurable)
----------------------------------------------------------

``flickr8k`` (Harwath & Glass 2015, Flickr 8k Audio Caption Corpus, + Flickr8k text)::

    wav_dir:        flickr_audio/wavs/             <image stem>_<n>.wav, n = 0..4
    wav2capt_file:  flickr_audio/wav2capt.txt      optional; "<wav> <image>.jpg #<n>" per line
    speakers_file:  flickr_audio/wav2spk.txt       optional; "<wav> <speaker>" per line
    captions_file:  Flickr8k_text/Flickr8k.token.txt   "<image>.jpg#<n>\\t<caption>" per line
    images_dir:     Flicker8k_Dataset/             <image>.jpg
    split_file:     Flickr8k_text/Flickr_8k.testImages.txt   one <image>.jpg per line

Without ``wav2capt_file`` caption n of image X is ``wav_dir/X_n.wav``. The test split has
1000 images × 5 captions.

``spokencoco`` (Hsu et al. 2021)::

    root:        SpokenCOCO/                       the json's "wav" paths are relative to it
    json_file:   SpokenCOCO/SpokenCOCO_test_karpathy.json   (or SpokenCOCO_val.json + split_file)
    images_dir:  the MSCOCO root; the json's "image" paths (val2014/COCO_val2014_….jpg) are
                 relative to it
    split_file:  optional Karpathy split (dataset_coco.json: {"images": [{"filename",
                 "split"}]}); only images whose split is "test" are kept

The json is ``{"data": [{"image": …, "captions": [{"text", "speaker", "uttid", "wav"}, …]}]}``
or its "unrolled" form with one ``"caption": {…}`` per entry; both are read. The Karpathy
test split has 5000 images and about 25k captions.

Every corpus also takes ``max_images`` (keep the first N images in sorted order, for a
quick run). Relative paths are taken from the working directory (Snakemake's).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Mapping

import pandas as pd
import soundfile as sf

from avprobe.io import write_parquet
from avprobe.stimuli.qc import write_audio_qc

log = logging.getLogger(__name__)

#: Corpus → its config keys: (required, optional).
CORPUS_KEYS = {
    "flickr8k": (
        ("wav_dir", "captions_file", "images_dir", "split_file"),
        ("wav2capt_file", "speakers_file", "max_images"),
    ),
    "spokencoco": (("root", "json_file", "images_dir"), ("split_file", "max_images")),
}
#: The config key under which each corpus's audio files are found (named in messages).
AUDIO_KEY = {"flickr8k": "wav_dir", "spokencoco": "root"}
#: The three sets every corpus gives, by suffix → modality.
CORPUS_SET_SUFFIXES = {"images": "image", "captions": "audio", "caption_text": "text"}


class CorpusConfigError(ValueError):
    """A corpus config, manifest or file that cannot be used; the message names the key."""


def corpus_set_names(corpus: str) -> dict[str, str]:
    """``{"images": "<corpus>_images", "captions": …, "caption_text": …}``."""
    return {suffix: f"{corpus}_{suffix}" for suffix in CORPUS_SET_SUFFIXES}


def _path(cfg: Mapping, key: str, where: str, kind: str = "file") -> Path:
    value = cfg.get(key)
    if not value or not isinstance(value, (str, os.PathLike)):
        raise CorpusConfigError(f"{where}.{key}: a {kind} path is required")
    path = Path(value).expanduser()
    if kind == "file" and not path.is_file():
        raise CorpusConfigError(f"{where}.{key}: file {str(path)!r} does not exist")
    if kind == "folder" and not path.is_dir():
        raise CorpusConfigError(f"{where}.{key}: folder {str(path)!r} does not exist")
    return path


def _lines(path: Path, where: str) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusConfigError(f"{where}: {str(path)!r} is not UTF-8 text ({exc})") from None
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _malformed(where: str, path: Path, number: int, line: str, expected: str) -> CorpusConfigError:
    return CorpusConfigError(f"{where}: {str(path)!r} line {number} is malformed: {line[:80]!r} (expected {expected})")


def _missing_files(paths: list[Path], where: str, what: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise CorpusConfigError(
            f"{where}: {len(missing)} of {len(paths)} {what} files do not exist, e.g. {str(missing[0])!r}"
        )


def _limit(images: list[str], cfg: Mapping, where: str) -> list[str]:
    images = sorted(images)
    limit = cfg.get("max_images")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise CorpusConfigError(f"{where}.max_images: a positive integer is needed, got {limit!r}")
        images = images[:limit]
    return images


def _check_keys(corpus: str, cfg: Mapping, where: str) -> None:
    if corpus not in CORPUS_KEYS:
        raise CorpusConfigError(f"{where}: unknown corpus {corpus!r}; known: {sorted(CORPUS_KEYS)}")
    if not isinstance(cfg, Mapping):
        raise CorpusConfigError(f"{where}: expected a mapping of paths, got {type(cfg).__name__}")
    required, optional = CORPUS_KEYS[corpus]
    unknown = sorted(set(cfg) - set(required) - set(optional))
    if unknown:
        raise CorpusConfigError(f"{where}: unknown keys {unknown}; known: {sorted(required + optional)}")


# --- Flickr8k ----------------------------------------------------------------------------------

# The image name is not required to end in .jpg: the distributed token file has a few odd
# names (e.g. "….jpg.1#0") of images that are in no split; they are read and never used.
_TOKEN_LINE = re.compile(r"^(?P<image>[^\s#]+)#(?P<n>\d+)\s+(?P<text>.+)$")
_WAV2CAPT_LINE = re.compile(r"^(?P<wav>\S+\.wav)\s+(?P<image>\S+\.jpg)\s+#(?P<n>\d+)$")


def load_flickr8k(cfg: Mapping, where: str = "stimuli.corpora.flickr8k") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(images, captions) tables of the Flickr8k test split, with absolute file paths."""
    _check_keys("flickr8k", cfg, where)
    wav_dir = _path(cfg, "wav_dir", where, "folder")
    images_dir = _path(cfg, "images_dir", where, "folder")
    captions_file = _path(cfg, "captions_file", where)
    split_file = _path(cfg, "split_file", where)

    split = []
    for number, line in _lines(split_file, f"{where}.split_file"):
        if not line.endswith(".jpg") or len(line.split()) != 1:
            raise _malformed(f"{where}.split_file", split_file, number, line, "one <image>.jpg per line")
        split.append(line)
    if not split:
        raise CorpusConfigError(f"{where}.split_file: {str(split_file)!r} lists no images")
    images = _limit(sorted(set(split)), cfg, where)
    wanted = set(images)

    texts: dict[tuple[str, int], str] = {}
    for number, line in _lines(captions_file, f"{where}.captions_file"):
        match = _TOKEN_LINE.match(line)
        if not match:
            raise _malformed(f"{where}.captions_file", captions_file, number, line, "<image>.jpg#<n><TAB><caption>")
        if match["image"] in wanted:
            texts[(match["image"], int(match["n"]))] = match["text"].strip()

    if cfg.get("wav2capt_file"):
        wav2capt = _path(cfg, "wav2capt_file", where)
        audio: dict[tuple[str, int], str] = {}
        for number, line in _lines(wav2capt, f"{where}.wav2capt_file"):
            match = _WAV2CAPT_LINE.match(line)
            if not match:
                raise _malformed(f"{where}.wav2capt_file", wav2capt, number, line, "<wav> <image>.jpg #<n>")
            if match["image"] in wanted:
                audio[(match["image"], int(match["n"]))] = match["wav"]
    else:
        audio = {(image, n): f"{image[:-4]}_{n}.wav" for image, n in texts}
    speakers: dict[str, str] = {}
    if cfg.get("speakers_file"):
        speakers_file = _path(cfg, "speakers_file", where)
        for number, line in _lines(speakers_file, f"{where}.speakers_file"):
            parts = line.split()
            if len(parts) != 2:
                raise _malformed(f"{where}.speakers_file", speakers_file, number, line, "<wav> <speaker>")
            speakers[parts[0]] = parts[1]

    image_rows, caption_rows = [], []
    by_image = defaultdict(list)
    for image, n in sorted(audio):
        by_image[image].append(n)
    for image in images:
        numbers = by_image.get(image)
        if not numbers:
            raise CorpusConfigError(f"{where}: image {image!r} of the split has no spoken caption")
        image_id = image[:-4]
        image_rows.append({"stimulus_id": image_id, "file_path": images_dir / image, "source": image, "split": "test"})
        for n in numbers:
            if (image, n) not in texts:
                raise CorpusConfigError(
                    f"{where}.captions_file: no text for caption #{n} of {image!r} (spoken in {audio[(image, n)]!r})"
                )
            wav = audio[(image, n)]
            caption_rows.append(
                {
                    "stimulus_id": f"{image_id}-c{n}",
                    "file_path": wav_dir / wav,
                    "image_id": image_id,
                    "text": texts[(image, n)],
                    "voice": speakers.get(wav, "unknown"),
                    "caption_index": n,
                    "source": wav,
                }
            )
    images_table, captions_table = pd.DataFrame(image_rows), pd.DataFrame(caption_rows)
    _missing_files(list(images_table["file_path"]), f"{where}.images_dir", "image")
    _missing_files(list(captions_table["file_path"]), f"{where}.wav_dir", "audio")
    return images_table, captions_table


# --- SpokenCOCO --------------------------------------------------------------------------------


def _karpathy_test_images(path: Path, where: str) -> set[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["images"]
        test = {Path(e["filename"]).stem for e in entries if e["split"] == "test"}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorpusConfigError(f"{where}.split_file: {str(path)!r} is not valid JSON ({exc})") from None
    except (KeyError, TypeError) as exc:
        raise CorpusConfigError(
            f"{where}.split_file: {str(path)!r} is not a Karpathy split file "
            f'({{"images": [{{"filename", "split"}}, …]}}; missing {exc})'
        ) from None
    if not test:
        raise CorpusConfigError(f"{where}.split_file: {str(path)!r} has no image with split 'test'")
    return test


def load_spokencoco(cfg: Mapping, where: str = "stimuli.corpora.spokencoco") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(images, captions) tables of SpokenCOCO (Karpathy test), with absolute file paths."""
    _check_keys("spokencoco", cfg, where)
    root = _path(cfg, "root", where, "folder")
    images_dir = _path(cfg, "images_dir", where, "folder")
    json_file = _path(cfg, "json_file", where)
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorpusConfigError(f"{where}.json_file: {str(json_file)!r} is not valid JSON ({exc})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), list) or not data["data"]:
        raise CorpusConfigError(f'{where}.json_file: {str(json_file)!r} needs a non-empty "data" list')

    captions_of: dict[str, list[dict]] = defaultdict(list)
    for index, entry in enumerate(data["data"]):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("image"), str):
            raise CorpusConfigError(f'{where}.json_file: entry {index} has no "image" path')
        found = entry.get("captions", [entry["caption"]] if "caption" in entry else None)
        if not isinstance(found, list) or not found:
            raise CorpusConfigError(f'{where}.json_file: entry {index} ({entry["image"]}) has no "captions"')
        for caption in found:
            if not isinstance(caption, Mapping) or not all(isinstance(caption.get(k), str) for k in ("wav", "text")):
                raise CorpusConfigError(
                    f'{where}.json_file: a caption of entry {index} ({entry["image"]}) lacks "wav" or "text"'
                )
            captions_of[entry["image"]].append(caption)
    keep = None
    if cfg.get("split_file"):
        keep = _karpathy_test_images(_path(cfg, "split_file", where), where)
    images = [image for image in captions_of if keep is None or Path(image).stem in keep]
    if not images:
        raise CorpusConfigError(f"{where}: no image of {str(json_file)!r} is in the test split")
    image_rows, caption_rows = [], []
    for image in _limit(images, cfg, where):
        image_id = Path(image).stem
        image_rows.append({"stimulus_id": image_id, "file_path": images_dir / image, "source": image, "split": "test"})
        for k, caption in enumerate(captions_of[image]):
            caption_rows.append(
                {
                    "stimulus_id": f"{image_id}-c{k}",
                    "file_path": root / caption["wav"],
                    "image_id": image_id,
                    "text": caption["text"].strip(),
                    "voice": str(caption.get("speaker", "unknown")),
                    "caption_index": k,
                    "uttid": str(caption.get("uttid", "")),
                    "source": caption["wav"],
                }
            )
    images_table, captions_table = pd.DataFrame(image_rows), pd.DataFrame(caption_rows)
    if images_table["stimulus_id"].duplicated().any():
        dup = images_table.loc[images_table["stimulus_id"].duplicated(), "source"].iloc[0]
        raise CorpusConfigError(f"{where}.json_file: two images share the name of {dup!r}")
    _missing_files(list(images_table["file_path"]), f"{where}.images_dir", "image")
    _missing_files(list(captions_table["file_path"]), f"{where}.root", "audio")
    return images_table, captions_table


LOADERS = {"flickr8k": load_flickr8k, "spokencoco": load_spokencoco}


def load_corpus(corpus: str, cfg: Mapping) -> tuple[pd.DataFrame, pd.DataFrame]:
    where = f"stimuli.corpora.{corpus}"
    if corpus not in LOADERS:
        raise CorpusConfigError(f"{where}: unknown corpus {corpus!r}; known: {sorted(LOADERS)}")
    return LOADERS[corpus](cfg, where)


def check_corpus_config(config: Mapping) -> dict[str, dict[str, int]]:
    """Check every corpus under ``config["stimuli"]["corpora"]`` (the whole config is
    passed); return ``{corpus: {"images": n, "captions": n}}`` or raise CorpusConfigError.

    Parses each manifest fully and checks that every image and audio file it names
    exists (a stat per file; no audio is read), so it is cheap enough for DAG construction.
    """
    corpora = (config.get("stimuli") or {}).get("corpora") or {}
    if not isinstance(corpora, Mapping):
        raise CorpusConfigError("stimuli.corpora: expected a mapping of corpus name → paths")
    counts = {}
    for corpus, cfg in corpora.items():
        images, captions = load_corpus(corpus, cfg)
        counts[corpus] = {"images": len(images), "captions": len(captions)}
        empty = empty_files(images, captions, corpus)
        if empty:
            log.warning("%d zero-byte files in corpus %s (they will be quarantined at extraction): %s%s",
                        len(empty), corpus, "; ".join(empty[:5]), " …" if len(empty) > 5 else "")
    return counts


def _relative(paths, manifest: str | os.PathLike) -> list[str]:
    base = Path(manifest).resolve().parent
    return [Path(os.path.relpath(Path(p).resolve(), base)).as_posix() for p in paths]


def import_corpus(
    corpus: str,
    cfg: Mapping,
    images_manifest: str | os.PathLike,
    captions_manifest: str | os.PathLike,
    caption_text_manifest: str | os.PathLike,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Write the ``<corpus>_images``, ``<corpus>_captions`` and ``<corpus>_caption_text``
    manifests (and the captions' QC table beside their manifest)."""
    images, captions = load_corpus(corpus, cfg)
    images_out = images.drop(columns="file_path")
    images_out.insert(1, "path", _relative(images["file_path"], images_manifest))
    captions_out = captions.drop(columns="file_path")
    captions_out.insert(1, "path", _relative(captions["file_path"], captions_manifest))
    rates, durations, bad = [], [], []
    for path in captions["file_path"]:
        try:
            info = sf.info(str(path))
        except Exception as err:  # a zero-byte or non-audio file: kept, and quarantined at extraction
            text = str(err).strip()
            bad.append(f"{path} ({text.splitlines()[0] if text else type(err).__name__})")
            rates.append(pd.NA)
            durations.append(float("nan"))
            continue
        rates.append(int(info.samplerate))
        durations.append(float(info.frames) / info.samplerate)
    if bad:
        log.warning("stimuli.corpora.%s.%s: %d of %d caption files are not readable audio and will be "
                    "quarantined at extraction: %s%s", corpus, AUDIO_KEY.get(corpus, "files"), len(bad),
                    len(captions), "; ".join(bad[:5]), " …" if len(bad) > 5 else "")
    captions_out["sample_rate"] = pd.array(rates, dtype="Int64")
    captions_out["duration"] = durations
    text_out = captions_out[["stimulus_id", "image_id", "text", "caption_index"]].copy()
    write_parquet(images_out, images_manifest)
    write_parquet(captions_out, captions_manifest)
    write_parquet(text_out, caption_text_manifest)
    write_audio_qc(captions_manifest)
    log.info(
        "%s: %d images, %d spoken captions (%.1f h) → %s, %s, %s",
        corpus, len(images_out), len(captions_out), sum(durations) / 3600.0,
        images_manifest, captions_manifest, caption_text_manifest,
    )  # fmt: skip
    return images_out, captions_out, text_out


def empty_files(images: pd.DataFrame, captions: pd.DataFrame, corpus: str) -> list[str]:
    """``"<config key>: <file>"`` for every zero-byte file of a corpus (a stat each)."""
    out = []
    for table, key in ((images, "images_dir"), (captions, AUDIO_KEY.get(corpus, "files"))):
        out += [f"stimuli.corpora.{corpus}.{key}: {p}" for p in table["file_path"] if Path(p).stat().st_size == 0]
    return out
