"""The driver layer that runs pools: it opens the Ray session and the actor pools (model
replicas, LLM gateways) and hands them to the stages, which never import Ray or the actors.

`pools.py` holds the one "connect, start, wait ready, yield, shut down, close" sequence of each
pool; `dissect.py`, `sae.py` and `eval_synthetic.py` are the entry points that callers (the CLI,
the sweep, the benchmarks) use in place of the stages' own functions.
"""
