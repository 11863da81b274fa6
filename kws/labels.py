"""The 12 MLPerf Tiny KWS labels, in the reference (tfds speech_commands) order."""

KEYWORDS = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes")
OTHER_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four",
    "happy", "house", "learn", "marvin", "nine", "one", "seven", "sheila", "six", "three",
    "tree", "two", "visual", "wow", "zero",
)
ALL_WORDS = KEYWORDS + OTHER_WORDS  # the 35 words of Speech Commands v2

LABELS = ("Down", "Go", "Left", "No", "Off", "On", "Right", "Stop", "Up", "Yes", "Silence", "Unknown")
NUM_CLASSES = len(LABELS)
SILENCE = LABELS.index("Silence")  # 10
UNKNOWN = LABELS.index("Unknown")  # 11

BACKGROUND_NOISE_DIR = "_background_noise_"
# the recording tfds cuts the validation split's silence from (it appends it to validation_list.txt)
VALIDATION_NOISE = "running_tap.wav"
SILENCE_DIR = "_silence_"  # test-set archive folders
UNKNOWN_DIR = "_unknown_"
TRAIN_ARCHIVE = "speech_commands_v0.02.tar.gz"  # the official archives' names
TEST_ARCHIVE = "speech_commands_test_set_v0.02.tar.gz"


def word_to_label(word: str) -> int:
    """Label index of a corpus folder name: keywords map to themselves, silence to Silence,
    every other word (and the test archive's _unknown_) to Unknown."""
    if word in KEYWORDS:
        return KEYWORDS.index(word)
    if word == SILENCE_DIR:
        return SILENCE
    return UNKNOWN
