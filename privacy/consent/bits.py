"""A strict bit reader over the base64url segments of IAB consent strings.

Both IAB TCF v2 TC strings and IAB GPP strings are sequences of segments, each a base64url
("web-safe", ``-`` and ``_``, no ``=`` padding) encoding of a big-endian bit string. Every
character carries six bits. Fields are fixed-width unsigned integers, booleans, bitfields,
36-bit decisecond timestamps, six-bit letters (``A`` = 0) and, in GPP only, Fibonacci-coded
integers and ranges.

Strictness rules (they are the point of this module):

* Reading past the end of a segment raises; missing bits are never read as zeros.
* A character outside the base64url alphabet raises, and so does an empty segment.
* :meth:`BitReader.finish` checks what follows the last field. Encoders pad the bit string with
  zeros to a whole byte and then to whole base64 characters (iabtcf-es ``Base64Url.encode``,
  iabgpp-es ``CompressedBase64UrlEncoder``); the GPP ``tcfeuv2`` encoder pads to a whole 24-bit
  base64 quantum (iabgpp-es ``TraditionalBase64UrlEncoder``), and some CMPs pad further (iabgpp-es
  ``TcfEuV2.test.ts`` "decode 4" has a publisher TC segment of 114 bits for 57 bits of fields).
  IAB's reference decoders ignore whatever follows the last field. We tolerate the unread bits
  inside the final byte (the byte holding the last field bit) whatever their value, and zero
  bits of any length after it: zeros carry no field. A non-zero bit after the final byte is data
  no field explains, and raises rather than being dropped.

Error messages name the segment and the bit offset and never contain the input string: consent
strings travel with requests and end up in logs (privacy invariant 1 keeps those clean).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Self

from identity.errors import InvalidFieldError

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SIX_BITS = {char: format(index, "06b") for index, char in enumerate(_ALPHABET)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# A Fibonacci codeword longer than this encodes a number above 10**13; no IAB field holds one, and
# refusing it early keeps hostile input from building huge integers and ranges.
MAX_FIBONACCI_BITS = 64

IdRange = tuple[int, int]


class ConsentStringDecodeError(InvalidFieldError):
    """A consent string does not decode; the message says where (segment, bit) and what.

    A subclass of :class:`InvalidFieldError`, so the API answers 422 with a pointer once the
    caller has located it with :meth:`at`. The message never contains the string itself.
    """

    code = "consent-string-invalid"

    def at(self, field: str) -> Self:
        """Return a copy of this error located at ``field`` (a JSON pointer)."""
        return type(self)(self.reason, self.message, field)


def is_base64url(text: str) -> bool:
    """Whether every character of ``text`` is in the base64url alphabet (and it is non-empty)."""
    return bool(text) and all(char in _SIX_BITS for char in text)


def merge_ranges(ranges: list[IdRange]) -> tuple[IdRange, ...]:
    """Sort ``ranges`` and merge those that overlap or touch, giving one canonical form."""
    merged: list[IdRange] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            last_start, last_end = merged[-1]
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return tuple(merged)


def expand_ranges(ranges: tuple[IdRange, ...]) -> frozenset[int]:
    """Every id covered by ``ranges`` (inclusive bounds)."""
    ids: set[int] = set()
    for start, end in ranges:
        ids.update(range(start, end + 1))
    return frozenset(ids)


class BitReader:
    """Reads fields, most significant bit first, from one base64url segment.

    ``where`` names the segment in error messages (``"core segment"``); ``error`` is the
    :class:`ConsentStringDecodeError` subclass raised, so the TCF and GPP decoders each raise
    their own type.
    """

    def __init__(
        self,
        segment: str,
        *,
        where: str,
        error: type[ConsentStringDecodeError] = ConsentStringDecodeError,
    ) -> None:
        self._where = where
        self._error = error
        self._pos = 0
        if not segment:
            raise error("empty_segment", f"{where}: is empty")
        chunks: list[str] = []
        for index, char in enumerate(segment):
            bits = _SIX_BITS.get(char)
            if bits is None:
                # The position only: the character itself could be a fragment of something else.
                raise error(
                    "bad_character",
                    f"{where}: character {index + 1} is not base64url (A-Z, a-z, 0-9, '-', '_')",
                )
            chunks.append(bits)
        self._bits = "".join(chunks)

    @property
    def position(self) -> int:
        """The offset, in bits from the start of the segment, of the next bit to read."""
        return self._pos

    @property
    def remaining(self) -> int:
        """How many bits are left to read."""
        return len(self._bits) - self._pos

    def error(
        self, reason: str, detail: str, *, at_bit: int | None = None
    ) -> ConsentStringDecodeError:
        """Build (not raise) this reader's error type with the segment and a bit offset."""
        bit = self._pos if at_bit is None else at_bit
        return self._error(reason, f"{self._where}: bit {bit}: {detail}")

    def _take(self, n: int, field: str) -> str:
        if n < 0:
            raise ValueError("a field width cannot be negative")
        end = self._pos + n
        if end > len(self._bits):
            raise self.error(
                "truncated",
                f"truncated while reading {field} (needs {n} bits, {self.remaining} left)",
            )
        chunk = self._bits[self._pos : end]
        self._pos = end
        return chunk

    def read_int(self, n: int, field: str) -> int:
        """Read an ``n``-bit unsigned integer."""
        chunk = self._take(n, field)
        return int(chunk, 2) if chunk else 0

    def read_bool(self, field: str) -> bool:
        """Read one bit as a boolean."""
        return self._take(1, field) == "1"

    def read_bitfield(self, n: int, field: str) -> frozenset[int]:
        """Read ``n`` bits; return the 1-based positions of the set bits (bit 1 is id 1)."""
        chunk = self._take(n, field)
        return frozenset(index + 1 for index, bit in enumerate(chunk) if bit == "1")

    def read_datetime_deciseconds(self, field: str) -> datetime:
        """Read a 36-bit count of deciseconds since the Unix epoch as an aware UTC datetime."""
        deciseconds = self.read_int(36, field)
        return _EPOCH + timedelta(milliseconds=100 * deciseconds)

    def read_6bit_letters(self, n: int, field: str) -> str:
        """Read ``n`` six-bit letters (0 is ``A`` ... 25 is ``Z``); other values raise."""
        letters: list[str] = []
        for index in range(n):
            start = self._pos
            value = self.read_int(6, field)
            if value > 25:
                raise self.error(
                    "bad_letter",
                    f"{field} letter {index + 1} is {value}, outside A-Z (0-25)",
                    at_bit=start,
                )
            letters.append(chr(ord("A") + value))
        return "".join(letters)

    def read_fibonacci_int(self, field: str) -> int:
        """Read a Fibonacci-coded positive integer (GPP): Zeckendorf bits ending in ``11``.

        Bit ``i`` of the codeword weighs the ``i``-th Fibonacci number 1, 2, 3, 5, 8, ...; the
        codeword ends at the first pair of adjacent ones.
        """
        start = self._pos
        end = self._bits.find("11", start)
        if end == -1:
            raise self.error(
                "truncated", f"truncated while reading {field}: no Fibonacci terminator '11'"
            )
        length = end + 2 - start
        if length > MAX_FIBONACCI_BITS:
            raise self.error(
                "too_large", f"{field} is a Fibonacci codeword of {length} bits (max 64)"
            )
        codeword = self._take(length, field)
        value = 0
        small, large = 1, 2
        for bit in codeword[:-1]:
            if bit == "1":
                value += small
            small, large = large, small + large
        return value

    def read_fibonacci_range(self, field: str) -> tuple[IdRange, ...]:
        """Read a GPP Fibonacci range: a 12-bit count, then single ids or ranges as deltas.

        Each entry starts with a bit (0: one id, 1: a range). Every Fibonacci number is a delta
        from the previous id read (start, then end), so ids strictly increase by construction.
        """
        count = self.read_int(12, f"{field} count")
        ranges: list[IdRange] = []
        offset = 0
        for index in range(count):
            entry = f"{field} entry {index + 1}"
            if self.read_bool(f"{entry} type"):
                start = offset + self.read_fibonacci_int(f"{entry} start")
                end = start + self.read_fibonacci_int(f"{entry} end")
                ranges.append((start, end))
                offset = end
            else:
                offset += self.read_fibonacci_int(entry)
                ranges.append((offset, offset))
        return tuple(ranges)

    def finish(self) -> None:
        """Check what follows the last field read (see the module docstring); raise if wrong."""
        final_byte_end = -(-self._pos // 8) * 8
        if "1" in self._bits[final_byte_end:]:
            raise self.error(
                "nonzero_padding",
                f"{len(self._bits) - self._pos} unread bits follow the last field and one after "
                "the final byte is non-zero; only zero padding may follow",
                at_bit=self._bits.index("1", final_byte_end),
            )


PurposeBits = tuple[frozenset[int], frozenset[int], int, frozenset[int], frozenset[int]]


def read_publisher_purposes(reader: BitReader, first: str, second: str) -> PurposeBits:
    """The publisher-purposes segment body both TCF EU v2 and TCF Canada have: two 24-bit
    purpose bitfields, NumCustomPurposes (6 bits) and two bitfields of that many custom purposes.

    ``first``/``second`` name the two kinds in error messages as the specs do (``Consent`` and
    ``LITransparency`` in TCF EU, ``ExpressConsent`` and ``ImpliedConsent`` in TCF Canada).
    Returns ``(purposes first, purposes second, custom count, custom first, custom second)``.
    """
    purposes_first = reader.read_bitfield(24, f"PubPurposes{first}")
    purposes_second = reader.read_bitfield(24, f"PubPurposes{second}")
    custom = reader.read_int(6, "NumCustomPurposes")
    custom_first = reader.read_bitfield(custom, f"CustomPurposes{first}")
    custom_second = reader.read_bitfield(custom, f"CustomPurposes{second}")
    return purposes_first, purposes_second, custom, custom_first, custom_second


def bits_of(segment: str) -> str:
    """The bit string (``"0"``/``"1"``) a base64url segment carries; callers validate first."""
    return "".join(_SIX_BITS[char] for char in segment)
