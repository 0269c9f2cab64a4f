"""Tests of privacy/consent/."""
