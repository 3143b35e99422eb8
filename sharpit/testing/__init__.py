"""Tiny random models in the exact on-disk layouts of the released ones, for tests, offline smoke runs
and users who want to try sharpit without downloading weights."""
