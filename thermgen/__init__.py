"""thermgen: thermal (LWIR) captioning, T-CLIP retrieval and thermal latent diffusion.

Stages (each a command): ``python -m thermgen.data`` (datasets, synthetic scenes), ``python -m thermgen.caption``
(IR-Cap captions -> manifest), ``python -m tclip.train`` / ``python -m tclip.eval`` (T-CLIP),
``python -m thermgen.train`` (the whole recipe), ``python -m thermgen.generate``, ``python -m thermgen.fid``;
``python -m thermgen.demo`` tries generation, captioning and search in a browser (the optional ``demo`` extra).

Heavy imports (torch, diffusers) happen only when a name that needs them is used.
"""

__version__ = "0.1.0"

__all__ = ["ThermalDiffusionPipeline", "ThermalDiffusionPipelineOutput", "__version__", "pretrained_path"]


def pretrained_path(name: str = "hituav-64"):
    """Folder of a pipeline shipped with the package (see :mod:`thermgen.pretrained`)."""
    from thermgen.pretrained import pretrained_path as _path

    return _path(name)


def __getattr__(name):
    if name in ("ThermalDiffusionPipeline", "ThermalDiffusionPipelineOutput"):
        import pipelines  # also registers the class for DiffusionPipeline.from_pretrained

        return getattr(pipelines, name)
    raise AttributeError(f"module 'thermgen' has no attribute {name!r}")
