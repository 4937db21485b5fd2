"""The oracles: naive autograd versions of every op, and numpy versions with hand-derived backwards.

Nothing here is fast. Each module is meant to be read next to the kernel it checks.
"""
