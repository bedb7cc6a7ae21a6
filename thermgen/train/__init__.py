"""Training: the recipe runner (``python -m thermgen.train``), the UNet loop, the VAE stage, configs.

Modules: :mod:`thermgen.train.recipe` (stages, skipping, resume; the command),
:mod:`thermgen.train.worker` (one training stage in a process of its own, started by the runner, data-parallel
under torchrun), :mod:`thermgen.train.unet` (UNet training under accelerate), :mod:`thermgen.train.config`
(recipe configs: one dataclass per stage, YAML loading, overrides), :mod:`thermgen.train.vae` (the VAE stage),
:mod:`thermgen.train.sd_import` (pipelines from Stable Diffusion folders),
:mod:`thermgen.train.conditioning` (the measurement that chose how T-CLIP conditions the UNet).
"""

from thermgen.train.config import ConfigError, RecipeConfig, load_config, load_recipe_config


def main(argv: list[str] | None = None) -> int:
    """The recipe command (``python -m thermgen.train``)."""
    from thermgen.train.recipe import main as _main

    return _main(argv)


def run_recipe(*args, **kwargs):
    """See :func:`thermgen.train.recipe.run_recipe`."""
    from thermgen.train.recipe import run_recipe as _run

    return _run(*args, **kwargs)


__all__ = ["ConfigError", "RecipeConfig", "load_config", "load_recipe_config", "main", "run_recipe"]
