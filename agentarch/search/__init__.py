"""Search: what can be proposed and how proposals are ranked, without any LLM.

Search spaces (templates the host can count parameters of), the conventional proposers (random, REA,
TPE), objectives and constraints, Pareto arithmetic, the performance predictor and predictor-guided
table search.

May import: evaluation (the static check), isolation (the protocol's types), tasks, store, and the
shared modules.
"""
