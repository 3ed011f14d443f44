"""OpenAI-compatible endpoints under /v1: a facade that speaks OpenAI's shapes over ordinary jobs."""
