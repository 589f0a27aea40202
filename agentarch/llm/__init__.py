"""The LLM side: the litellm client (concurrency, retries, cost), the prompts and SEARCH/REPLACE edits.

May import: evaluation (the static check the prompt states), tasks, store and the shared modules.
"""
