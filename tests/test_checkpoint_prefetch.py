"""prefetch_models fetches single checkpoint files (a pinned URL, here served from 127.0.0.1),
records what it fetched, refuses a file whose sha256 is not the pinned one, and a job then loads
the model from the cache without the network."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from functools import partial

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from avprobe import prefetch  # noqa: E402
from avprobe.models import beats, checkpoints, load_model  # noqa: E402
from model_inputs import CONFIGS, clips  # noqa: E402


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture()
def server(tmp_path):
    """A static file server on 127.0.0.1 (random port) serving tmp_path/www; stopped after the test."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_prefetch_fetches_and_records_a_pinned_checkpoint(tmp_path, server, monkeypatch):
    root, base = server
    monkeypatch.setenv("AVPROBE_CHECKPOINTS", str(tmp_path / "cache"))
    built = beats.build_untrained(CONFIGS / "beats-tiny", tmp_path / "tiny", seed=0)
    (root / "BEATs_iter3.pt").write_bytes((built / "BEATs.pt").read_bytes())
    sha = hashlib.sha256((root / "BEATs_iter3.pt").read_bytes()).hexdigest()
    url = f"{base}/BEATs_iter3.pt"
    models = {
        "beats": {"family": "beats", "kind": "pretrained", "source": url, "sha256": sha, "towers": ["audio"]},
        "ctrl": {"family": "beats", "kind": "untrained", "source": str(CONFIGS / "beats-tiny")},
    }
    assert prefetch.pretrained_sources(models) == {
        "beats": {"weights": "checkpoint", "source": url, "revision": "main", "sha256": sha, "companions": {}}}
    record = prefetch.prefetch(models, tmp_path / "prefetched.json")
    assert json.loads((tmp_path / "prefetched.json").read_text()) == record
    assert set(record) == {"beats"}
    got = record["beats"]
    assert got["sha256"] == sha and got["source"] == url and got["weights"] == "checkpoint"
    assert got["path"] == str(checkpoints.url_cache_path(url, sha))
    assert hashlib.sha256(open(got["path"], "rb").read()).hexdigest() == sha
    # the job: no network needed any more
    (root / "BEATs_iter3.pt").unlink()
    adapter = load_model("beats", models["beats"], device="cpu")
    out = adapter.embed("audio", [clips()[0]])
    assert set(out) == {"0", "1", "2", "3", "logits"} and np.isfinite(out["3"]).all()
    assert adapter.provenance()["checkpoint"]["sha256"] == sha
    # a second prefetch finds it cached and records the same thing
    assert prefetch.prefetch(models, tmp_path / "again.json")["beats"]["path"] == got["path"]


def test_prefetch_refuses_a_file_with_another_hash(tmp_path, server, monkeypatch):
    root, base = server
    monkeypatch.setenv("AVPROBE_CHECKPOINTS", str(tmp_path / "cache"))
    (root / "yamnet.pth").write_bytes(b"not the file the config pins")
    url = f"{base}/yamnet.pth"
    pinned = hashlib.sha256(b"the file the config pins").hexdigest()
    models = {"yamnet": {"family": "yamnet", "kind": "pretrained", "source": url, "sha256": pinned}}
    with pytest.raises(RuntimeError, match="has sha256 .* the config pins"):
        prefetch.prefetch(models, tmp_path / "prefetched.json")
    assert not checkpoints.url_cache_path(url, pinned).exists()
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # no partial download left
    assert not (tmp_path / "prefetched.json").exists()
    unpinned = {"yamnet": {**models["yamnet"], "sha256": None}}
    served = hashlib.sha256(b"not the file the config pins").hexdigest()
    with pytest.raises(RuntimeError, match=f"needs `sha256`.*add `sha256: {served}`"):
        prefetch.prefetch(unpinned, tmp_path / "prefetched.json")  # tells the hash to pin, keeps nothing
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
