"""agentarch: LLM-driven neural architecture discovery with a sandboxed runner and a persistent archive."""
