"""Tests of privacy/auditing/."""
