"""IR-Cap: physics-grounded captions measured from the thermal pixels.

Stages: :mod:`~thermgen.ircap.measure` (numbers from pixels and boxes) ->
:mod:`~thermgen.ircap.facts` (documented rules -> facts with evidence) ->
:mod:`~thermgen.ircap.render` (two captions within 77 CLIP tokens) ->
:mod:`~thermgen.ircap.manifest` (versioned JSON Lines, validated reader) and
:mod:`~thermgen.ircap.report` (caption statistics, ground-truth agreement on synthetic data).
:mod:`~thermgen.ircap.backends` plugs in an optional language model with validation and fallback.
The command is ``python -m thermgen.caption``.
"""

from .facts import Fact, infer_facts
from .manifest import SCHEMA_VERSION, read_manifest, validate_record, write_manifest
from .measure import measure_image
from .render import Captions, count_tokens, parse_counts, render_captions

__all__ = [
    "SCHEMA_VERSION", "Captions", "Fact", "count_tokens", "infer_facts", "measure_image", "parse_counts",
    "read_manifest", "render_captions", "validate_record", "write_manifest",
]
