"""Evaluation: trec_eval-exact measures (ir-measures over pytrec_eval) and paired significance tests."""

from lab.eval.metrics import EvalResult, evaluate, parse_measures, trec_order
from lab.eval.significance import PairedTestResult, paired_test

__all__ = ["EvalResult", "PairedTestResult", "evaluate", "paired_test", "parse_measures", "trec_order"]
