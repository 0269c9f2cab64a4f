"""Decoders for IAB consent strings: TCF v2 TC strings and GPP strings.

The modules here are small and pure: they take a string and return frozen dataclasses, or raise
a :class:`~privacy.consent.bits.ConsentStringDecodeError` subclass that names the bit offset and
segment that is wrong. They never log or echo the input string.
"""
