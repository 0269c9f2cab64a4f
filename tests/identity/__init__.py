"""Tests of identity/."""
