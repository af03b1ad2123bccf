"""Cohort-level numbers from shifted tiles: feature effects along directions, bias checks."""
