"""Listwise LLM reranking (FIRST single-token scoring, generation baseline, sliding windows, training)."""
