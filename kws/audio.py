"""Any recording ffmpeg reads (wav, mp3, flac, ogg, m4a, ...), at any rate and channel count, as
16-bit mono at the features' sample rate: decoded through pydub, resampled by soxr."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kws.common import KwsError


def _ffmpeg_reason(error: Exception) -> str:
    """The last line ffmpeg wrote (its actual complaint), without the input's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    return last.split(": ", 1)[1] if last.startswith(("pipe:", "cache:pipe:")) and ": " in last else last


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
        # Given an open file rather than its name, pydub always decodes through ffmpeg. Given a
        # *.wav name it parses the file itself, and reads float WAVs (WAVE_FORMAT_EXTENSIBLE) as
        # integers: noise.
        with open(path, "rb") as f:
            segment = AudioSegment.from_file(f)
    except CouldntDecodeError as e:
        raise KwsError(f"{path}: not audio ffmpeg can decode ({_ffmpeg_reason(e)})") from None
    except (KeyError, IndexError, ValueError):  # ffprobe found no audio stream (an image, a text file)
        raise KwsError(f"{path}: not audio ffmpeg can decode (no audio stream)") from None
    except OSError as e:
        raise KwsError(f"{path}: cannot read ({e.strerror or e})") from None
    if segment.frame_count() == 0:
        raise KwsError(f"{path}: no audio samples")
    # pydub hands out signed integers of the decoded width (8-bit WAVs already re-centred)
    full_scale = float(2 ** (8 * segment.sample_width - 1))
    x = np.asarray(segment.get_array_of_samples(), dtype=np.float32).reshape(-1, segment.channels)
    x = x.mean(axis=1) / np.float32(full_scale)
    if segment.frame_rate != sample_rate:
        import soxr

        x = soxr.resample(x, segment.frame_rate, sample_rate, quality="HQ")
    # the training clips are int16: the same rounding here
    return np.round(np.clip(x * 32768.0, -32768, 32767)).astype(np.int16)
