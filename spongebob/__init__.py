# Hand-written module (not generated from a notebook).
"""SpongeBob: a small Llama-style chat LLM, built chapter by chapter in the course notebooks.

Most modules here are generated from `notebooks/*.ipynb` by `make export` (their first line says so);
`cli`, `files`, `download`, `runtime` and the `world` package are written by hand.
"""

__version__ = "0.1.0"
