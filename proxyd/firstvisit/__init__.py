"""The transparent retry: dial a plan's routes with the client's first bytes held back,
read the first answer, judge it (evidence), replay on the next route, then hand the
tunnel to the data plane.
"""

from proxyd.firstvisit._retry import Outcome, best_error, note_dial
from proxyd.firstvisit._tunnel import relay, run_tunnel

__all__ = ["Outcome", "best_error", "note_dial", "relay", "run_tunnel"]
