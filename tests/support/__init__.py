"""Tests of test helpers."""
