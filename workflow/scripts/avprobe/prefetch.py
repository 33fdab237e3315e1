"""Download the configured pretrained models into the local model cache.

Compute nodes of many clusters have no internet; this runs once on a login node (it is a
Snakemake localrule) so that every later job finds its weights in the cache.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Mapping

from .io import atomic_path
from .models import checkpoints
from .models.registry import FAMILIES

log = logging.getLogger(__name__)

#: Weights for other frameworks that transformers' PyTorch path never reads.
OTHER_FRAMEWORKS = ["*.h5", "*.msgpack", "tf_model*", "flax_model*", "rust_model*", "*.ot", "*.onnx*"]


def pretrained_sources(models: Mapping[str, dict]) -> dict[str, dict]:
    """What each pretrained model needs from a hub, by the weight source its family declares
    (:mod:`avprobe.models.registry`): ``{name: {"weights": "transformers" | "checkpoint",
    "source", "revision", "sha256"?, "companions": {spec_key: hub id}}}``.

    Baselines, controls and local folders/files need nothing. A plugin with a hub ``source`` is
    fetched as a transformers repository.
    """
    out = {}
    for name, spec in models.items():
        if spec.get("kind", "pretrained") != "pretrained" or not spec.get("source"):
            continue
        family = FAMILIES.get(str(spec.get("family")))
        weights = family.weights if family else "transformers"
        source = str(spec["source"])
        companions = {key: spec.get(key, default) for key, default in (family.companions if family else ())}
        companions = {k: v for k, v in companions.items() if v and not os.path.isdir(v)}
        if weights == "none":
            continue
        local = os.path.isdir(source) if weights == "transformers" else checkpoints.kind_of(source) == "local"
        if local and not companions:
            continue
        entry = {"weights": weights, "source": None if local else source,
                 "revision": spec.get("revision", "main"), "companions": companions}
        if spec.get("sha256"):
            entry["sha256"] = spec["sha256"]
        out[name] = entry
    return out


def _snapshot(name: str, source: str, revision: str, timeout: float = 30.0) -> dict:
    from huggingface_hub import snapshot_download

    folder = snapshot_download(source, revision=revision, ignore_patterns=OTHER_FRAMEWORKS,
                               etag_timeout=float(timeout))
    return {"source": source, "revision": revision, "commit": os.path.basename(folder), "path": folder}


#: Seconds without an answer before a hub request is given up (per request, not per download:
#: a large file that keeps arriving is never cut). ``HF_HUB_DOWNLOAD_TIMEOUT`` overrides it.
HUB_TIMEOUT = 30.0
#: Tries per model before the one-line error; waits of 2, 4, … s between them.
HUB_ATTEMPTS = 3


def bound_hub_requests(timeout: float) -> None:
    """Give every request of huggingface_hub a timeout: its HTTP client has none by default
    (a hub that accepts the connection and never answers hangs the job), and its etag and
    download timeouts are read from the environment at import."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(max(timeout, 1))))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(max(timeout, 1))))
    try:
        import huggingface_hub
        from huggingface_hub.utils import _http
    except ImportError:  # pragma: no cover - the prefetch env has it
        return
    base = getattr(_http, "default_client_factory", None)
    if base is None or not hasattr(huggingface_hub, "set_client_factory"):
        return  # an older, requests-based release: the env timeouts above apply

    bounded = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}

    def bound(request):  # calls such as model_info pass timeout=None explicitly: no limit at all
        if not any(v is not None for v in (request.extensions.get("timeout") or {}).values()):
            request.extensions["timeout"] = dict(bounded)

    def factory():
        client = base()
        client.timeout = timeout
        hooks = client.event_hooks
        hooks["request"] = [*hooks.get("request", []), bound]
        client.event_hooks = hooks
        return client

    huggingface_hub.set_client_factory(factory)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def prefetch(models: Mapping[str, dict], out_path: str | os.PathLike, *, timeout: float | None = None,
             attempts: int = HUB_ATTEMPTS) -> dict:
    """Fetch every pretrained model's files by its family's weight source (a transformers
    repository, or a checkpoint file, plus declared companion repositories); record the resolved
    commit (or sha256) of each.

    Every hub request times out after ``timeout`` seconds without an answer (default
    ``HF_HUB_DOWNLOAD_TIMEOUT`` or :data:`HUB_TIMEOUT`); a model is tried ``attempts`` times,
    then the job stops with one line naming the model, the endpoint and the fix.
    """
    if timeout is None:
        timeout = float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or HUB_TIMEOUT)
    bound_hub_requests(float(timeout))
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        attempts = 1  # offline by choice: a retry cannot succeed
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    resolved = {}
    for name, entry in sorted(pretrained_sources(models).items()):
        what = f"{entry['source']}@{entry['revision']}" if entry["source"] else "its companion models"
        log.info("fetching %s (%s)", name, what)
        for attempt in range(1, max(int(attempts), 1) + 1):
            try:
                record = {}
                if entry["source"] and entry["weights"] == "transformers":
                    record = _snapshot(name, entry["source"], entry["revision"], timeout)
                elif entry["source"]:
                    record = checkpoints.fetch(name, entry["source"], entry["revision"], entry.get("sha256"),
                                               timeout=float(timeout))
                record["companions"] = {key: _snapshot(name, hub_id, "main", timeout)
                                        for key, hub_id in sorted(entry["companions"].items())}
                break
            except Exception as err:  # the hub library raises many kinds; all mean the same here
                if attempt >= max(int(attempts), 1):
                    raise RuntimeError(
                        f"could not download model {name!r} ({what}) from {endpoint} after {attempt} tries "
                        f"with a {float(timeout):g} s timeout: {_first_line(err)}. Run prefetch_models on a "
                        "machine with internet access."
                    ) from None
                log.warning("%s: try %d of %d failed (%s); retrying in %d s", name, attempt, attempts,
                            _first_line(err), 2 ** attempt)
                time.sleep(2 ** attempt)
        resolved[name] = {**entry, **record}
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(resolved, indent=2, sort_keys=True))
    return resolved


def merge_records(paths, out_path: str | os.PathLike) -> dict:
    """Join the per-model records of ``prefetch_model`` into one (``prefetch_models``)."""
    merged = {}
    for path in paths:
        with open(path) as fh:
            merged.update(json.load(fh))
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(merged, indent=2, sort_keys=True))
    return merged
