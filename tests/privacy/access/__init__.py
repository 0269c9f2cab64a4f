"""Tests of privacy/access/."""
