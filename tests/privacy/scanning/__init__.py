"""Tests of privacy/scanning/."""
