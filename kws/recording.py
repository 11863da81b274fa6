"""Any recording ffmpeg reads (wav, mp3, flac, ogg, m4a, ...), at any rate and channel count, as
16-bit mono at the features' sample rate: decoded through pydub, resampled by soxr."""
from __future__ import annotations

import contextlib
import os
import wave
from pathlib import Path

import numpy as np

from kws.common import KwsError


def _ffmpeg_reason(error: Exception) -> str:
    """The last line ffmpeg wrote (its actual complaint), without the input's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    return last.split(": ", 1)[1] if last.startswith(("pipe:", "cache:pipe:")) and ": " in last else last


def _pydub_parses(path: Path) -> bool:
    """Whether to hand pydub the file's name rather than the open file. Given a *.wav name, pydub
    parses the file itself (no ffmpeg: fast), but it reads float WAVs (WAVE_FORMAT_EXTENSIBLE) as
    integers: noise. So a *.wav goes by name only if it is integer PCM (Python's wave module reads
    it); otherwise as an open file, which pydub always pipes through ffmpeg. Any other file goes by
    name: pydub runs ffmpeg on it."""
    if path.suffix.lower() != ".wav":
        return True
    try:
        with wave.open(str(path)):
            return True
    except (wave.Error, EOFError):
        return False


def decode(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """The recording at `path` as int16 mono at `sample_rate`: channels averaged, then resampled
    with soxr's high-quality filter. A missing, empty or undecodable file is a KwsError naming it."""
    from pydub import AudioSegment
    from pydub.exceptions import CouldntDecodeError

    path = Path(path)
    if not path.exists():
        raise KwsError(f"{path}: file not found")
    if not path.is_file():
        raise KwsError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise KwsError(f"{path}: empty file")
    try:
        with contextlib.ExitStack() as stack:
            source = str(path) if _pydub_parses(path) else stack.enter_context(open(path, "rb"))
            segment = AudioSegment.from_file(source)
    except CouldntDecodeError as e:
        raise KwsError(f"{path}: not audio ffmpeg can decode ({_ffmpeg_reason(e)})") from None
    except (KeyError, IndexError, ValueError):  # ffprobe found no audio stream (an image, a text file)
        raise KwsError(f"{path}: not audio ffmpeg can decode (no audio stream)") from None
    except OSError as e:
        raise KwsError(f"{path}: cannot read ({e.strerror or e})") from None
    if segment.frame_count() == 0:
        raise KwsError(f"{path}: no audio samples")
    # pydub holds signed little-endian integers of 1, 2 or 4 bytes (it re-centres 8-bit WAVs and
    # widens 24-bit ones); read as a buffer: array.array -> numpy element by element is 10x slower
    width = segment.sample_width
    x = np.frombuffer(segment.raw_data, dtype=f"<i{width}").reshape(-1, segment.channels)
    x = x.mean(axis=1, dtype=np.float32) / np.float32(2 ** (8 * width - 1))
    if segment.frame_rate != sample_rate:
        import soxr

        x = soxr.resample(x, segment.frame_rate, sample_rate, quality="HQ")
    # the training clips are int16: the same rounding here
    return np.round(np.clip(x * 32768.0, -32768, 32767)).astype(np.int16)
