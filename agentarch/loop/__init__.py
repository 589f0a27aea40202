"""The agent loop: the scheduler, the LangGraph graph of one proposal, and what steers it.

The scheduler keeps proposals in flight; each proposal is a graph thread (select context, render the
prompt, propose, check, dedup, review, smoke, train, analyze, record); islands, screening, the model
bandit, few-shot selection and human review steer it. Baseline runs (REA, random, TPE, best-of-N) go
through the same evaluation and archive from here.

May import: llm, search, evaluation and everything below them. Not the CLI or the web.
"""
