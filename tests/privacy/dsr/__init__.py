"""Tests of privacy/dsr/."""
