"""Guards: the pure rules that bound every action (cooldown, rate limits, budget, flapping, breakers, locks).

They take the history and the time as arguments and return a Refusal or None; the engine reads the history
from the store, so limits survive restarts and are shared by replicas.
"""
