"""Where runs are placed and what the job will most likely cost: the market facts per spot pool (instance type
x AZ), the expected-cost model and the choice of the group's pools. The plan consumes `Market` (plan.py)."""
