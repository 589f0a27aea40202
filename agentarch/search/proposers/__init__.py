"""Proposers: whatever suggests the next candidates (a baseline search algorithm, or the LLM)."""
