"""The audit log (append-only, hash-chained) and its signed heads."""
