"""`engine: swarm`: the stack is deployed on a manager and watched until it converges;
swarm's own rolling update moves the traffic (stack.py)."""

from ..stack import Swarm as Strategy

__all__ = ["Strategy"]
