"""Evaluation: metrics, full-ranking evaluation, experiments and reports."""
