"""The candidate graph's nodes, by stage of a candidate's way: proposing (context, prompt, LLM, extract, repair),
evaluating (static check, dedup, review gate, smoke, screen, train) and recording (analyze, record, fail).

Each stage is a class over one RunContext, built on `base.Nodes`, which holds what all stages share;
agentarch/loop/graph.py wires them into the graph.
"""
