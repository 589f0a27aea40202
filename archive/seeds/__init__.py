"""The seed architectures, one folder per task kind: reference models as a person wrote them (package data).

The best-of-N control (`agentarch baseline --algo best-of-n`) shows them to the LLM as its only examples.
"""
