"""Auditing text-to-image models: annotators, metrics, reports."""
