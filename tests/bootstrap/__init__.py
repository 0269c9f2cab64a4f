"""Tests of bootstrap/."""
