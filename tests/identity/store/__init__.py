"""Tests of identity/store/."""
