"""LLM plumbing shared by the provider explainers: rate limits and the request cache."""
