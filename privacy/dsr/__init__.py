"""Data-subject requests: tracking, access exports, restriction/objection, downstream webhooks."""
