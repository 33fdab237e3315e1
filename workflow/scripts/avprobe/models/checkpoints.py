"""Single checkpoint files: where a family whose weights are not a transformers repository finds them.

Families declared with ``weights="checkpoint"`` (:mod:`avprobe.models.registry`) name their
weights in the model entry's ``source`` as one of

* a local file (``resources/…/model.pt``, or an absolute path): used as it is;
* ``hf://<owner>/<repo>/<path/in/repo>``: one file of a hub repository, at ``revision``
  (Hugging Face cache, so ``HF_HOME`` and offline mode work as for transformers models);
* ``https://…`` with the entry's ``sha256``: a pinned URL (e.g. a GitHub release file), cached as
  ``$AVPROBE_CHECKPOINTS/<sha256[:16]>/<file name>`` (default ``~/.cache/avprobe/checkpoints``)
  and verified against the hash.

``prefetch_models`` calls :func:`fetch` (with internet); jobs call :func:`locate`, which never
downloads and fails with one line naming the model and the fix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from .base import ModelUnavailableError

HF_PREFIX = "hf://"


def cache_root() -> Path:
    return Path(os.environ.get("AVPROBE_CHECKPOINTS", Path.home() / ".cache" / "avprobe" / "checkpoints"))


def kind_of(source: str) -> str:
    """``local`` | ``hub`` | ``url``."""
    if source.startswith(HF_PREFIX):
        return "hub"
    if source.startswith(("https://", "http://")):
        return "url"
    return "local"


def _split_hub(source: str) -> tuple[str, str]:
    parts = source[len(HF_PREFIX):].split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"checkpoint source {source!r}: expected hf://<owner>/<repo>/<file>")
    return f"{parts[0]}/{parts[1]}", parts[2]


def url_cache_path(url: str, sha256: str) -> Path:
    return cache_root() / sha256[:16] / Path(url.split("?")[0]).name


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(name: str, source: str, revision: str | None = None, sha256: str | None = None) -> Path:
    """The local path of a checkpoint file, without downloading anything.

    Raises ModelUnavailableError (one line: the model, what is missing, the fix).
    """
    kind = kind_of(source)
    fix = "Fix: run the `prefetch_models` rule once on a machine with internet."
    if kind == "local":
        path = Path(source)
        if not path.is_file():
            raise ModelUnavailableError(f"model {name!r}: checkpoint file {source!r} does not exist; give a "
                                        "file path, hf://<owner>/<repo>/<file> or an https URL with sha256")
        return path
    if kind == "hub":
        from huggingface_hub import hf_hub_download

        repo, filename = _split_hub(source)
        try:
            return Path(hf_hub_download(repo, filename, revision=revision or "main", local_files_only=True))
        except Exception as err:  # the hub library raises several kinds; all mean "not cached"
            raise ModelUnavailableError(f"model {name!r}: {source} (revision {revision or 'main'}) is not in the "
                                        f"Hugging Face cache [{type(err).__name__}]. {fix}") from err
    if not sha256:
        raise ModelUnavailableError(f"model {name!r}: the URL {source!r} needs `sha256` in the model entry "
                                    "(the file's hash, so a changed download is never used silently)")
    path = url_cache_path(source, sha256)
    if not path.is_file():
        raise ModelUnavailableError(f"model {name!r}: {source} is not cached at {path}. {fix}")
    return path


def fetch(name: str, source: str, revision: str | None = None, sha256: str | None = None,
          timeout: float = 60.0) -> dict:
    """Download a checkpoint file into its cache (with internet); return what was fetched.

    ``{"source", "revision", "path", "sha256"}``; a URL whose content does not match ``sha256``
    is deleted and raises RuntimeError.
    """
    kind = kind_of(source)
    if kind == "local":
        path = locate(name, source)
        return {"source": source, "revision": None, "path": str(path), "sha256": sha256_of(path)}
    if kind == "hub":
        from huggingface_hub import hf_hub_download

        repo, filename = _split_hub(source)
        path = Path(hf_hub_download(repo, filename, revision=revision or "main"))
        commit = path.parent.name if path.parent.parent.name == "snapshots" else None
        return {"source": source, "revision": revision or "main", "commit": commit, "path": str(path),
                "sha256": sha256_of(path)}
    if not sha256:
        # Never keep an unpinned file; but download it once so the user learns the hash to pin.
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".unpinned.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out)
            got = sha256_of(tmp)
        finally:
            os.unlink(tmp)
        raise RuntimeError(f"model {name!r}: the URL {source!r} needs `sha256` in the model entry; the file "
                           f"served now has sha256 {got} (not kept): check that it is the file you want, "
                           f"then add `sha256: {got}`")
    path = url_cache_path(source, sha256)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out)
            got = sha256_of(tmp)
            if got != sha256:
                raise RuntimeError(f"model {name!r}: {source} has sha256 {got}, the config pins {sha256}; "
                                   "not used (update `sha256` only if the new file is the one you want)")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return {"source": source, "revision": None, "path": str(path), "sha256": sha256}
