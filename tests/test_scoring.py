"""kws.scoring: the prediction rule and the figures every check reports."""
import numpy as np

from kws import scoring
from kws.labels import LABELS


def test_the_last_maximum_wins_and_ties_are_counted():
    logits = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    pred, ties = scoring.predict(logits)
    assert pred.tolist() == [2, 2, 0] and ties == 2
    assert scoring.is_tie(logits).tolist() == [True, True, False]


def test_metrics_per_class_and_confusion(tmp_path):
    labels = np.array([0, 0, 1, 11])
    v = scoring.Validation(names=list("abcd"), labels=labels, predictions=np.array([0, 1, 1, 11]), ties=1)
    assert v.accuracy == 0.75
    m = scoring.metrics(v, float_accuracy=1.0)
    assert m == {"accuracy": 0.75, "num_files": 4, "ties": 1, "float_accuracy": 1.0, "accuracy_gap": 0.25}
    rows = {r["label"]: r for r in scoring.per_class(v)}
    assert rows["Down"] == {"label": "Down", "files": 2, "correct": 1, "accuracy": 0.5}
    assert rows["Stop"]["accuracy"] is None  # no files of that label
    cm = scoring.confusion_matrix(labels, v.predictions, len(LABELS))
    assert cm.sum() == 4 and cm[0, 1] == 1 and cm[11, 11] == 1
    scoring.write_per_class_csv(tmp_path / "pc.csv", v)
    assert (tmp_path / "pc.csv").read_text().splitlines()[:2] == ["label,files,correct,accuracy", "Down,2,1,0.5"]
    scoring.plot_confusion(cm, tmp_path / "cm.png", "t")
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"
