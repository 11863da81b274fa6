"""The one schema of params.yaml: a pydantic model per section, strict types, unknown keys refused.

Every stage script loads params.yaml through `load_params`, which validates the whole file before
any work starts, so a misspelled key anywhere fails at once with one line naming it. The defaults
below are the only defaults; a test checks that they equal params.yaml."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from kws.common import KwsError

# Numbers that yaml may write as 1 or 1.0; strict mode still refuses true/false and strings.
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
BitWidth = Annotated[int, Field(ge=1, le=8)]
Fraction = Annotated[float, Field(ge=0, lt=1)]      # a share dropped or spread: [0, 1)
KeptFraction = Annotated[float, Field(gt=0, le=1)]  # a share kept: (0, 1]
Probability = Annotated[float, Field(ge=0, le=1)]
Pair = Annotated[list[float], Field(min_length=2, max_length=2)]

# share of speakers per TTS engine; a selected engine that is not installed is an error
Engine = Literal["espeak", "flite", "festival", "mbrola", "mbrola_accented", "pico", "rhvoice", "piper", "kokoro",
                 "kokoro_en"]
NOISE_KINDS = Literal["white_noise", "pink_noise", "room_tone", "brown_noise", "electric_hum", "running_tap",
                      "babble"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _ordered(pair: list[float], name: str, lo: float, hi: float) -> list[float]:
    if not lo <= pair[0] <= pair[1] <= hi:
        raise ValueError(f"{name}: expected [low, high] with {lo} <= low <= high <= {hi}, got {pair!r}")
    return pair


class Synthetic(Section):
    engines: Annotated[dict[Engine, Annotated[float, Field(ge=0)]], Field(min_length=1)] = {
        "espeak": 0.25, "flite": 0.2, "festival": 0.2, "mbrola": 0.2, "pico": 0.15, "piper": 0.0, "kokoro": 0.0,
        "kokoro_en": 0.0}
    num_speakers: Annotated[int, Field(ge=3, le=20000)] = 2400  # one each for train, validation, test
    other_words_per_speaker: Annotated[int, Field(ge=1, le=25)] = 8
    takes_per_word: PositiveInt = 1
    pitch_range: Pair = [0.75, 1.35]
    rate_range: Pair = [0.8, 1.25]
    formant_range: Pair = [0.9, 1.12]
    intonation: bool = True
    channel_tilt_db: Pair = [-3, 3]
    channel_ripple_db: Annotated[float, Field(ge=0, le=12)] = 3
    noise_floor_db: Pair = [-85, -40]
    noise_floor_ripple_db: Annotated[float, Field(ge=0, le=12)] = 6
    noise_kinds: Annotated[list[NOISE_KINDS], Field(min_length=1)] = [
        "room_tone", "pink_noise", "brown_noise", "electric_hum", "running_tap", "babble"]
    validation_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1
    noise_seconds: Annotated[int, Field(ge=2)] = 60
    test_silence_clips: NonNegativeInt = 80
    test_unknown_clips: NonNegativeInt = 80

    @model_validator(mode="after")
    def _ranges(self):
        if not sum(self.engines.values()) > 0:
            raise ValueError("engines: all shares are 0")
        for name in ("pitch_range", "rate_range", "formant_range"):
            _ordered(getattr(self, name), name, 0.5, 2.0)
        _ordered(self.channel_tilt_db, "channel_tilt_db", -12, 12)
        _ordered(self.noise_floor_db, "noise_floor_db", -120, 0)
        if len(set(self.noise_kinds)) != len(self.noise_kinds):
            raise ValueError("noise_kinds: names must be distinct")
        if "running_tap" not in self.noise_kinds:  # kws.labels.VALIDATION_NOISE
            raise ValueError("noise_kinds: running_tap is needed (the validation split's silence is cut from it)")
        return self


class Dataset(Section):
    source: Literal["synthetic", "local", "speech_commands"] = "synthetic"
    local_dir: str | None = None
    local_test_dir: str | None = None
    tfds_data_dir: str = "data/tfds"
    tfds_manual_dir: str | None = None


class Features(Section):
    feature_type: Literal["mfcc", "lfbe", "td_samples"] = "mfcc"
    sample_rate: PositiveInt = 16000
    clip_duration_ms: PositiveInt = 1000
    window_size_ms: Annotated[float, Field(gt=0)] = 30
    window_stride_ms: Annotated[float, Field(gt=0)] = 20
    num_mel_bins: PositiveInt = 40
    lower_edge_hertz: Annotated[float, Field(ge=0)] = 20.0
    upper_edge_hertz: Annotated[float, Field(gt=0)] = 4000.0
    dct_coefficient_count: PositiveInt = 10
    background_frequency: Probability = 0.8
    background_volume: Annotated[float, Field(ge=0)] = 0.1
    train_copies: PositiveInt = 5
    batch_size: PositiveInt = 256


class Model(Section):
    arch: Literal["mlp", "cnn"] = "mlp"
    input_bit_width: BitWidth = 8
    input_clip_percentiles: Pair = [1.0, 99.0]
    hidden_layers: Annotated[list[PositiveInt], Field(min_length=1)] = [256, 256, 256]
    weight_bit_width: BitWidth = 3
    weight_narrow_range: bool = False
    act_bit_width: BitWidth = 3
    act_max: Annotated[float, Field(gt=0)] = 2.0
    output_bit_width: BitWidth = 3
    weight_scale_init: Annotated[float, Field(gt=0)] = 0.1
    input_dropout: Fraction = 0.1
    dropout: Fraction = 0.0
    cnn_channels: Annotated[list[PositiveInt], Field(min_length=1)] = [64, 64, 64]
    cnn_kernel: PositiveInt = 3
    cnn_stride: PositiveInt = 2

    @model_validator(mode="after")
    def _percentiles(self):
        lo, hi = self.input_clip_percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"input_clip_percentiles: expected [low, high] with 0 <= low < high <= 100, "
                             f"got {self.input_clip_percentiles!r}")
        return self


class Augment(Section):
    enabled: bool = True
    time_masks: NonNegativeInt = 0
    time_mask_width: NonNegativeInt = 4
    coeff_masks: NonNegativeInt = 0
    coeff_mask_width: NonNegativeInt = 1
    max_shift: NonNegativeInt = 8
    probability: Probability = 1.0
    channel_offset: Probability = 0.3


class Searcher(Section):
    name: Literal["single", "grid", "random", "adaptive_asha"] = "single"
    metric: str = "val_accuracy"
    smaller_is_better: bool = False
    max_trials: int | None = None  # random, adaptive_asha: trials (null: the sweep grid's size); ranges: kws.expconf
    max_time: int | None = None    # adaptive_asha: in time_metric units (null: train.epochs)
    time_metric: str | None = None         # adaptive_asha (null: epochs)
    mode: Literal["aggressive", "standard", "conservative"] | None = None  # adaptive_asha (null: standard)


class Asha(Section):
    enabled: bool = False
    grace_period: PositiveInt = 10   # epochs every trial trains before it can be stopped
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0  # 1/reduction_factor of the trials go on at each rung


class Ray(Section):
    address: str | None = None       # null: RAY_ADDRESS, or else a Ray instance started for the run
    cpus_per_trial: PositiveInt = 1  # kws.train pins 1 thread; more CPUs per trial go unused
    storage_path: str | None = None  # null: ray_results/ here (one machine); a cluster: a path all nodes share, or s3://...
    search: Literal["grid", "random"] = "grid"
    num_samples: PositiveInt = 4     # random: trials drawn from the sweep grid
    random_seed: NonNegativeInt = 0  # random: which trials are drawn
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"  # what ASHA compares
    asha: Asha = Asha()
    max_failures: NonNegativeInt = 3  # restarts of a failed trial, each from its last checkpoint


class Train(Section):
    epochs: PositiveInt = 70
    batch_size: PositiveInt = 512
    lr: Annotated[float, Field(gt=0)] = 0.0005
    eta_min: Annotated[float, Field(ge=0)] = 1.0e-8
    unknown_weight_divisor: Annotated[float, Field(gt=0)] = 4.8
    unknown_share: KeptFraction = 0.5
    label_smoothing: Fraction = 0.1
    warmup_epochs: NonNegativeInt = 10  # capped at epochs - 1 (kws.train), so -S train.epochs=2 alone works
    warmup_bit_width: BitWidth = 8
    augment: Augment = Augment()
    engine: Literal["local", "determined", "ray"] = "local"
    det_master: str | None = None
    ray: Ray = Ray()
    searcher: Searcher = Searcher()
    sweep: dict[str, list[Any]] = {}


class Export(Section):
    check_samples: PositiveInt = 512
    atol: Annotated[float, Field(ge=0)] = 1.0e-4
    # FINN v0.10.1's onnx 1.13 / onnxruntime 1.16.1 load <= 18 (kws.qonnx_model.MAX_OPSET); Brevitas' QONNX needs >= 11
    opset: Annotated[int, Field(ge=11, le=18)] = 18


class Bins(Section):
    split: Literal["train", "validation", "test"] = "test"
    num_bin_files: PositiveInt = 1000
    shuffle_seed: NonNegativeInt | None = 0
    max_accuracy_gap: Probability = 0.02
    onnxruntime: bool = True


class Hls4ml(Section):
    enabled: bool = False
    backend: Literal["Vitis", "Vivado", "Vitis_HLS"] = "Vitis"
    mantissa_bits: Annotated[int, Field(ge=1, le=52)] = 23


def _whole_float_as_int(value):
    """1.0e+5 in yaml is a float; as a count it means 100000."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class Finn(Section):
    enabled: bool = False
    board: Annotated[str, Field(min_length=1)] = "Pynq-Z2"
    fpga_part: Annotated[str, Field(min_length=1)] = "xc7z020clg400-1"
    synth_clk_period_ns: Annotated[float, Field(gt=0)] = 10
    target_fps: Annotated[int, Field(gt=0), BeforeValidator(_whole_float_as_int)] = 100000


class Predict(Section):
    hop_ms: Annotated[float, Field(gt=0)] = 100
    threshold: Probability = 0.7
    min_windows: PositiveInt = 3


class Params(Section):
    """params.yaml as a whole."""
    seed: NonNegativeInt = 0
    synthetic: Synthetic = Synthetic()
    dataset: Dataset = Dataset()
    features: Features = Features()
    model: Model = Model()
    train: Train = Train()
    export: Export = Export()
    bins: Bins = Bins()
    hls4ml: Hls4ml = Hls4ml()
    finn: Finn = Finn()
    predict: Predict = Predict()


# pydantic's error types in the words the project's other messages use
_PHRASES = {
    "int_type": "expected an integer", "int_from_float": "expected an integer", "float_type": "expected a number",
    "bool_type": "expected true or false", "string_type": "expected a string", "list_type": "expected a list",
    "dict_type": "expected a mapping", "literal_error": "expected {expected}",
    "greater_than": "expected more than {gt}", "greater_than_equal": "expected at least {ge}",
    "less_than": "expected less than {lt}", "less_than_equal": "expected at most {le}",
    "too_short": "expected at least {min_length} item(s)", "too_long": "expected at most {max_length} item(s)",
}


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the schema allows next to `loc` (for "did you mean")."""
    node: type[BaseModel] | None = root
    for part in loc[:-1]:
        field = node.model_fields.get(part) if node else None
        node = field.annotation if field and isinstance(field.annotation, type) and issubclass(
            field.annotation, BaseModel) else None
    return list(node.model_fields) if node else []


def describe(error: dict, root: type[BaseModel] = None, prefix: str = "") -> str:
    """One pydantic error as `params <dotted.key>: <what is wrong>`; `prefix` names the section
    `root` validated (train.augment, say) when that was not the whole file."""
    root = root or Params
    loc = tuple(str(p) for p in error["loc"] if p != "[key]")  # "[key]": the key itself is wrong
    key = ".".join((prefix, *loc) if prefix else loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(loc[-1], _fields_at(root, loc), n=1)
        hint = f" (did you mean {'.'.join((*([prefix] if prefix else []), *loc[:-1], close[0]))}?)" if close else ""
        return f"params {key}: unknown key{hint}"
    msg = _PHRASES.get(error["type"], error["msg"].removeprefix("Value error, ")).format(**error.get("ctx", {}))
    field, sep, rest = msg.partition(": ")
    if sep and field.isidentifier():  # a check across fields names its own key: "warmup_epochs: ..."
        return f"params {key}.{field}: {rest}"
    if "input" in error and error["type"] != "missing":
        msg += f", got {error['input']!r}"
    return f"params {key}: {msg}"


def validate(raw: Any, source: str = "params.yaml") -> Params:
    """The typed params; the first problem found raises a one-line KwsError naming the key."""
    if not isinstance(raw, dict):
        raise KwsError(f"{source}: expected a mapping of params")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise KwsError(describe(e.errors()[0])) from None


def section(cls: type[Section], value: Section | dict | None, name: str) -> Section:
    """One section, typed: as loaded (already valid), or a plain dict (a test's, or a cluster
    trial's hyperparameters) validated here with the schema's defaults for what it leaves out."""
    if isinstance(value, cls):
        return value
    try:
        return cls.model_validate(value or {})
    except ValidationError as e:
        raise KwsError(describe(e.errors()[0], cls, name)) from None


def _fill(raw: dict, full: dict) -> dict:
    """`raw` with every key it leaves out taken from `full` (the schema's defaults): the values a
    user wrote keep their own yaml types (70 stays an int where the schema says float)."""
    out = dict(raw)
    for key, value in full.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict) and key != "sweep":
            out[key] = _fill(out[key], value)
    return out


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    """params.yaml, validated as a whole and completed with the schema's defaults, as a plain dict."""
    path = Path(path)
    if not path.is_file():
        raise KwsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise KwsError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    raw = {} if raw is None else raw
    params = validate(raw, str(path))
    return _fill(raw, params.model_dump())
