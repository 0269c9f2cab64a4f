"""Tests of privacy/keys/."""
