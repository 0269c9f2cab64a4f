"""Signed webhooks in and out (Standard Webhooks, replay guard) and outbound HTTP that cannot be
turned against the service's own network."""
