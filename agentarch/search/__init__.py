"""Search: what can be proposed and how proposals are ranked.

Search spaces (templates the host can count parameters of, fields and a JSON schema a model can be asked in), the
conventional proposers (random, REA, TPE), the in-space LLM proposer (a model choosing architectures of a space),
objectives and constraints, Pareto arithmetic, the performance predictor and predictor-guided table search.

May import: evaluation (the static check), isolation (the protocol's types), tasks, store, the shared modules, and
of llm only what a call is (the client and its errors: the in-space proposer asks a model through them; llm's
few-shot selection imports search, so nothing of llm may import the proposers back).
"""
