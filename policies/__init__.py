"""Pure decision rules: the HPA algorithm, the predictive floor, the oracle, capacity models.

Nothing here reads a clock, the network, the disk or global random state: time arrives as
``now_s`` and state is passed in and returned.
"""
