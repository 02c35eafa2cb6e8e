"""Offline half: a discrete-event simulator that replays traces through the policy code.

The simulator imports policies and forecasting, never the service (autoscaler).
"""
