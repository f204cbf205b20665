"""The Invoke task collections; tasks.py wires them together."""
