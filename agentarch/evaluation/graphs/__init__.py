"""The graph room: what the host believes about a trained candidate comes from its ONNX graph, not its Python.

The sandbox trains a candidate and exports the trained network to ONNX; from then on nothing the candidate's
code says about itself is believed. These modules are pure functions over the graph's bytes or its
`onnx.ModelProto`, run by the host and by the clean evaluator (a process that loads graphs and never candidate
code):

- checks.py: refuse a graph that is too big, not ONNX, outside the supported IR and opsets, outside the standard
  domain or the operator allowlist, with external data, strings, functions or nested graphs, or with other
  inputs and outputs than one batch of examples in and one batch of outputs out (or a graph task's interface);
- interface.py: what each kind's graph takes and gives (a graph task's named inputs x and edge_index, a graphs
  task's x, edge_index and batch), which stored files feed them in the clean evaluator and which rows are scored;
- sizes.py and shapes.py: every tensor's shape (and, for small tensors, its value), with the batch size as a
  symbol;
- batch_flow.py: the proof that each example's output depends on that example only (no operator mixes the
  entries of a batch), by information-flow analysis of the batch axis through every operator;
- measures.py: parameters, FLOPs per example, the structure signature for novelty and a structural digest,
  all from the graph alone;
- features.py: the network as a fixed-length vector for the performance predictor (agentarch/search/predictor.py),
  from the graph alone, so a network outside any search space is predicted from what it is;
- worker.py (the clean evaluator, a program of its own that runs graphs sandboxed) and scoring.py (the host's
  side of it: check a graph, run the worker, score what it returns).

Every refusal is a `GraphRejected` whose message tells the author of the network (an LLM, usually) what to
change. The analyses import onnx and numpy, never torch and never candidate code; they may import what the
evaluation room may (isolation, tasks, store and the shared modules).
"""
