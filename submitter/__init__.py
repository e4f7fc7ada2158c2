"""submitter: one command from a job spec to results in S3, on the cheapest suitable spot capacity."""

__version__ = "0.1.0"
