"""gag_core: the pure-torch math of GAG, PLADIS and attention circulation control.

No ComfyUI import: every function takes and returns plain tensors, with shapes in its docstring.
Statistics are computed in float32 and results returned in the input dtype; score matrices are
processed in query chunks so that at most ``max_score_elements`` scores exist at once.
"""
from .entmax import entmax
from .attention import sparse_dense_attention
from .guidance import GagRule, PladisRule, gag, pladis
from .circulation import adaptive_settings, circulation_attention, symmetricity
from .diagnostics import hopfield_diagnostics

__all__ = [
    "entmax",
    "sparse_dense_attention",
    "gag",
    "pladis",
    "GagRule",
    "PladisRule",
    "circulation_attention",
    "adaptive_settings",
    "symmetricity",
    "hopfield_diagnostics",
]
