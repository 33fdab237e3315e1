"""The benchmark harness runs end to end (quick mode) and writes its report. No timed assertions."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = {
    "extraction": "Extraction: batched (padding-aware) vs one item at a time",
    "rsa": "RSA bootstrap: ours vs rsatoolbox",
    "retrieval": "Retrieval top-k",
    "parquet": "Parquet:",
    "scaling": "Scaling with the number of stimuli",
    "tts": "Text-to-speech: clips per second per engine",
    "asr": "Speech recognition: transformers generate vs CTranslate2",
    "workflow": "Workflow overhead",
}


def _headline(text: str) -> dict[str, list[tuple[str, float]]]:
    """benchmark → [(number label, value)] from the report's headline table."""
    part = text.split("## Headline numbers", 1)[1].split("\n## ", 1)[0]
    out: dict[str, list[tuple[str, float]]] = {}
    for line in part.splitlines():
        m = re.match(r"^\| (\w+) \| (.+?) \| \*\*([-+0-9.,e]+|inf|n/a)×?\*\* \|", line)
        if m:
            value = float("nan") if m.group(3) == "n/a" else float(m.group(3).replace(",", ""))
            out.setdefault(m.group(1), []).append((m.group(2), value))
    return out


def test_quick_harness_writes_every_section_and_ratio(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    text = out.read_text()
    assert "## Machine" in text
    for key in ("CPU", "cores", "RAM", "torch", "numpy / BLAS", "date", "device"):
        assert f"| {key} |" in text, key
    for title in SECTIONS.values():
        assert title in text, title
    assert "This benchmark failed" not in text

    ratios = _headline(text)
    assert set(ratios) == set(SECTIONS), ratios
    for name, numbers in ratios.items():
        for label, value in numbers:
            assert math.isfinite(value) and value >= 0, (name, label, value)
    labels = " ".join(label for numbers in ratios.values() for label, _ in numbers)
    assert "batched vs one at a time" in labels
    assert "rsatoolbox / ours" in labels
    assert "reference / ours (time)" in labels and "reference / ours (peak memory)" in labels
    assert "bytes per embedding" in labels

    # agreement checks the harness makes: same numbers both ways
    assert re.search(r"Recall values identical: \*\*True\*\*", text)
    pearson = dict(ratios["rsa"])["RSA CI agreement with rsatoolbox, Pearson: largest CI-bound difference"]
    assert pearson < 1e-9
    for _, value in ratios["extraction"]:
        assert value > 0
    diffs = [float(m) for m in re.findall(r"max abs diff ([0-9.e+-]+) \(embeddings", text)]
    assert diffs and max(diffs) < 1e-3
    assert proc.stdout.count("\n== ") == len(SECTIONS)
