"""Tests of privacy/transport/."""
