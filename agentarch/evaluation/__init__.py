"""Evaluation: one candidate's way from code to a recorded result, one step each.

The static check of the candidate contract, deduplication (text, AST, function, structure), the
candidate row, the sandbox job through an executor (local slots or Ray), the verdict and the record.
The agent loop's graph runs these steps as its nodes; `agentarch eval` runs them in one go.

May import: isolation, tasks, store, and the shared modules (errors, formats, config).
"""
