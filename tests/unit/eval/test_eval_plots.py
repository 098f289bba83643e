"""Figures are byte-stable: the report stage embeds them, so a figure that changed on a rerun with the same data
would rerun the report (and `dvc exp run -S firststage.alpha=...` would rerun more than the stage it changed)."""

import hashlib
import io

import numpy as np
import pandas as pd

from lab.eval import plots


def png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return hashlib.md5(buf.getvalue()).hexdigest()


def test_metric_by_run_is_byte_stable_and_leaves_numpy_random_alone():
    data = pd.DataFrame({"run": ["a"] * 6 + ["b"] * 6, "qid": [str(q) for q in range(6)] * 2, "measure": "ndcg_10",
                         "value": np.linspace(0.1, 0.9, 12), "dataset": "d"})
    np.random.seed(1)
    first = png(plots.metric_by_run(data, "ndcg_10"))
    np.random.seed(2)                                    # another global state: same dots (stripplot's jitter)
    assert png(plots.metric_by_run(data, "ndcg_10")) == first
    np.random.seed(3)                                    # and the caller's stream is put back
    expected = np.random.RandomState(3).random_sample()
    plots.metric_by_run(data, "ndcg_10")
    assert np.random.random() == expected
