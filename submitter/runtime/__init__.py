"""What runs on the instance (or in a Batch job's container): one run lifecycle shared by the pool agent and
the Batch wrapper, shipped as one pinned zipapp (artefact.py). Standard library only, Python 3.9+."""
