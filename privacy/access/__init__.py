"""Purpose-bound access: the policy engine, purposes, profile/audience/feature reads, audiences,
paging cursors, pseudonyms, API keys and operator accounts."""
