"""Stage synthetic_corpus: an offline Speech Commands v2 look-alike spoken by several TTS engines.

A speaker is (engine, voice, pitch, rate, formant): a voice of espeak-ng, flite, festival, MBROLA,
pico, RHVoice or Piper, with its own f0 factor, speaking-rate factor and vocal-tract factor (formants
scaled by resampling, the VTLP trick). Real speech is far more varied than any one synthesiser:
a model trained on one engine barely transfers to another, so diversity across engines and
speakers is what makes the corpus useful on real clips. Every file is a pure function of
(params, seed, file name), so the corpus is byte-identical whatever the worker scheduling.
Output: the two official archives' look-alikes, plus README.txt (speakers and their splits):
  speech_commands_v0.02.tar.gz: <word>/<speaker>_nohash_<n>.wav, {validation,testing}_list.txt,
      _background_noise_/*.wav
  speech_commands_test_set_v0.02.tar.gz: {<keyword>,_silence_,_unknown_}/*.wav
Archives rather than 42k loose files: DVC checks 3 files on every `dvc repro` instead of 42k
(a no-op run measured 1.0 s instead of 3.4 s), and the dataset stage reads real archives the
same way.

The modules, each importing only those above it:
  tts       the engines: their voices, running them at a pitch and rate, decoding their audio
  audio     an engine's output -> one 16 kHz take (resampling, formants, channel, noise floor, WAV)
  noise     the generated _background_noise_ recordings
  speakers  the speakers drawn from params and seed, their words, splits and takes
  corpus    the corpus on disk: workers, split lists, test folder, archives
"""
from kws.synthetic.corpus import build_corpus, write_archive, write_unused

__all__ = ["build_corpus", "write_archive", "write_unused"]
