"""Generation metrics: FID/KID through clean-fid (offline Inception), and T-CLIP thermal-domain metrics.

Layers, imported one way: ``features`` (extractors by name) <- ``fid`` (FID/KID) <- ``tclip_metrics`` <- ``report``
(the generation report); ``attributes`` / ``judging`` (the attribute judge) build on ``fid``.

>>> from thermgen.metrics import evaluate_generation
>>> report = evaluate_generation("RUN/manifest.jsonl", "RUN/samples", prompts, "RUN/reports",
...                              split="test", tclip_dir="RUN/tclip")
>>> report["fid"], report["kid_mean"], report["tclip"]["text_alignment"]["r1"]

Command: ``python -m thermgen.fid``. Report keys: :data:`GENERATION_REPORT_KEYS`.
"""

from .fid import (
    REPORT_KEYS,
    ImageSet,
    compute_metrics,
    extract_features,
    fid_from_features,
    kid_from_features,
    list_images,
    match_prompts,
    read_grey,
    read_manifest_images,
    resolve_fake,
    resolve_images,
)
from .report import GENERATION_REPORT_KEYS, comparison_markdown, evaluate_generation, report_markdown, write_report
from .inception import INSTALL_HINT, InceptionFeatures, find_inception_weights

__all__ = [
    "GENERATION_REPORT_KEYS",
    "INSTALL_HINT",
    "REPORT_KEYS",
    "ImageSet",
    "InceptionFeatures",
    "comparison_markdown",
    "compute_metrics",
    "evaluate_generation",
    "extract_features",
    "fid_from_features",
    "find_inception_weights",
    "kid_from_features",
    "list_images",
    "match_prompts",
    "read_grey",
    "read_manifest_images",
    "report_markdown",
    "resolve_fake",
    "resolve_images",
    "write_report",
]
