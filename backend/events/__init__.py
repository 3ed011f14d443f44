"""Push: job events, server-sent event streams, and signed webhooks."""
