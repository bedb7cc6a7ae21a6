"""ThermalDiffusionPipeline: text-to-thermal latent diffusion conditioned on T-CLIP.

The shape follows diffusers' ``StableDiffusionPipeline``: check inputs, encode the prompt with the
T-CLIP text component, prepare latents, denoise with classifier-free guidance, decode with the VAE,
post-process into single-channel (white-hot) images, return an output dataclass.

Thermal specifics:

* The text component is ``tclip.text_encoder.TCLIPTextEncoder`` (any ``ModelMixin`` with the same
  ``tokenize(prompts)`` / ``forward(input_ids, input_ids_fine=None)`` interface works). It takes an
  optional second, fine-grained prompt (IR-Cap's "Thermal infrared image ..." caption), which the
  encoder's mode decides how to use (fused or concatenated token states).
* The VAE may be 1-channel (trained on thermal) or a pretrained 3-channel Stable Diffusion VAE: thermal
  is replicated to 3 channels on encode and the channels averaged on decode
  (:func:`encode_thermal`, :func:`decode_thermal`); or the lossless :class:`PatchAutoencoder`, which folds
  pixel patches into channels (pixel-space diffusion at a latent model's cost).
* Outputs are single-channel: PIL mode "L", float arrays in [0, 1], or 16-bit integers; optionally
  rendered through a thermal colormap (PIL "RGB").
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ModelMixin, UNet2DConditionModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, is_xformers_available, logging
from diffusers.utils.torch_utils import randn_tensor

from .colormaps import Colormap, apply_colormap, check_colormap
from .patch_autoencoder import PatchAutoencoder

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt", "uint16", "latent")
# The start of the warning logged when a prompt is cut (diffusers' wording), followed by the dropped texts.
TRUNCATION_WARNING = ("The following part of your input was truncated because T-CLIP can only handle sequences up to "
                      "{n} tokens")


@dataclass
class ThermalDiffusionPipelineOutput(BaseOutput):
    """Output of :class:`ThermalDiffusionPipeline`.

    images: depending on ``output_type``:
        ``"pil"``: list of PIL images, mode "L" (mode "RGB" with a colormap);
        ``"np"``: float32 array (B, H, W, 1) in [0, 1] ((B, H, W, 3) with a colormap);
        ``"pt"``: float32 tensor (B, 1, H, W) in [0, 1] ((B, 3, H, W) with a colormap);
        ``"uint16"``: uint16 array (B, H, W, 1), 0..65535 (full range = the model's [0, 1]);
        ``"latent"``: the final latents (B, C, h, w), unscaled as the UNet sees them.
        White-hot throughout: bright = hot.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


def _execution_device(module: torch.nn.Module) -> torch.device:
    """Where `module` computes: its offload hook's device under `enable_model_cpu_offload` (its weights
    wait on the CPU until the hook moves them), else its own device."""
    hook_device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    return torch.device(hook_device) if hook_device is not None else module.device


def encode_thermal(
    vae: AutoencoderKL,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    sample: bool = True,
) -> torch.Tensor:
    """Encode thermal images to the latents the UNet sees.

    Args:
        vae: an ``AutoencoderKL`` with 1 input channel, or 3 (a pretrained SD VAE: the thermal channel is
            replicated).
        images: float tensor (B, 1, H, W) in [0, 1], white-hot.
        generator: for the posterior sample.
        sample: draw from the posterior (training) or take its mode (``False``, deterministic).

    Returns:
        float tensor (B, C_latent, H / f, W / f), shifted and scaled by the VAE's ``shift_factor``
        (if any) and ``scaling_factor``, so that it has roughly unit variance.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"`images` must be (B, 1, H, W), got shape {tuple(images.shape)}")
    x = images.to(device=_execution_device(vae), dtype=vae.dtype) * 2.0 - 1.0
    if vae.config.in_channels != 1:
        x = x.expand(-1, vae.config.in_channels, -1, -1)
    dist = vae.encode(x).latent_dist
    latents = dist.sample(generator=generator) if sample else dist.mode()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


def decode_thermal(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Decode UNet latents to thermal images.

    Args:
        vae: an ``AutoencoderKL`` with 1 output channel, or several (their mean is taken: a 3-channel SD
            VAE fed replicated thermal reproduces it in every channel).
        latents: float tensor (B, C_latent, h, w) as returned by :func:`encode_thermal`.

    Returns:
        float32 tensor (B, 1, h * f, w * f) in [0, 1], white-hot.
    """
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    z = latents.to(device=_execution_device(vae), dtype=vae.dtype) / vae.config.scaling_factor + shift
    x = vae.decode(z, return_dict=False)[0]
    if x.shape[1] != 1:
        x = x.mean(dim=1, keepdim=True)
    return (x.float() / 2.0 + 0.5).clamp(0.0, 1.0)


class ThermalDiffusionPipeline(DiffusionPipeline):
    r"""
    Text-to-thermal-image generation: a latent diffusion UNet conditioned on the T-CLIP text tower.

    This model inherits from [`DiffusionPipeline`] (saving, loading, devices, offloading, progress bars).

    Args:
        vae ([`AutoencoderKL`]):
            Maps thermal images to latents and back. 1-channel (trained on thermal) or 3-channel (a pretrained
            Stable Diffusion VAE; thermal is replicated on encode and the channels averaged on decode).
        text_encoder ([`~tclip.text_encoder.TCLIPTextEncoder`]):
            The frozen T-CLIP text tower; tokenizes prompts itself (`tokenize`) and returns token states
            (B, L, hidden_size). If `hidden_size` differs from the UNet's `cross_attention_dim`, the UNet bridges
            it (`encoder_hid_dim_type="text_proj"`).
        unet ([`UNet2DConditionModel`]):
            Denoises the latents, cross-attending to the token states.
        scheduler ([`SchedulerMixin`]):
            Any diffusers scheduler; swap with `pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`.

    Loading: `ThermalDiffusionPipeline.from_pretrained(folder)`; the generic
    `DiffusionPipeline.from_pretrained(folder)` works too once this module is imported (`import pipelines` or
    `import thermgen`), because diffusers resolves `model_index.json`'s class name in its own namespace and
    this module registers the class there (loading code from the folder would need `trust_remote_code`).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components: list[str] = []
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        vae: AutoencoderKL | PatchAutoencoder,
        text_encoder: ModelMixin,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if vae is not None else 8

    # ------------------------------------------------------------------ helpers

    def enable_xformers_if_available(self) -> bool:
        """Use xformers attention when the pipeline runs on CUDA and xformers is installed; else keep PyTorch SDPA.

        Returns whether xformers was enabled. (diffusers raises if xformers is asked for on a CPU.)
        """
        if not (torch.cuda.is_available() and is_xformers_available() and self._execution_device.type == "cuda"):
            return False
        self.enable_xformers_memory_efficient_attention()
        return True

    def encode_prompt(
        self,
        prompt: list[str],
        prompt_fine: list[str] | None,
        device: torch.device,
        num_images_per_prompt: int,
    ) -> torch.Tensor:
        """Token states for prompts: float tensor (B * num_images_per_prompt, L_out, hidden_size).

        `prompt_fine` (same length as `prompt`) is the fine-grained prompt, or None to let the text encoder's
        mode decide (fused/concat modes then use `prompt` for both adapters). Logs a warning naming the words cut
        off a prompt longer than the text encoder's context (77 tokens), as diffusers' Stable Diffusion does.
        """
        self._warn_truncated(list(prompt) + list(prompt_fine or []))
        ids = self.text_encoder.tokenize(list(prompt)).to(device)
        ids_fine = self.text_encoder.tokenize(list(prompt_fine)).to(device) if prompt_fine is not None else None
        embeds = self.text_encoder(ids, ids_fine) if ids_fine is not None else self.text_encoder(ids)
        if not torch.is_tensor(embeds):  # a ModelOutput or tuple from a compatible encoder
            embeds = embeds[0]
        embeds = embeds.to(device=device, dtype=self.unet.dtype)
        return embeds.repeat_interleave(num_images_per_prompt, dim=0)

    def truncated_text(self, prompts: list[str]) -> list[str]:
        """Per prompt, the text the text encoder's tokenizer cuts off (``""`` when the prompt fits).

        Encoders without ``truncated_text`` (only the ``tokenize``/``forward`` interface) report nothing.
        """
        check = getattr(self.text_encoder, "truncated_text", None)
        return check(list(prompts)) if check is not None else ["" for _ in prompts]

    def _warn_truncated(self, prompts: list[str]) -> None:
        dropped = list(dict.fromkeys(t for t in self.truncated_text(prompts) if t))  # distinct, in order
        if dropped:
            n = getattr(self.text_encoder, "context_length", 77)
            logger.warning(f"{TRUNCATION_WARNING.format(n=n)}: {dropped}")

    @property
    def takes_pooled(self) -> bool:
        """Whether the UNet takes T-CLIP's pooled prompt embedding (``class_embed_type="projection"``)."""
        return getattr(self.unet.config, "class_embed_type", None) == "projection"

    def _given_pooled(self, pooled: torch.Tensor, device: torch.device, num_images_per_prompt: int) -> torch.Tensor:
        """A caller's pooled embeddings (B, pooled_size), checked, on the device and dtype, repeated per image."""
        want = int(self.unet.config.projection_class_embeddings_input_dim)
        if pooled.dim() != 2 or pooled.shape[1] != want:
            raise ValueError(f"pooled prompt embeddings must be (batch, {want}), got {tuple(pooled.shape)}")
        return pooled.to(device=device, dtype=self.unet.dtype).repeat_interleave(num_images_per_prompt, dim=0)

    def encode_pooled(
        self, prompt: list[str], prompt_fine: list[str] | None, device: torch.device, num_images_per_prompt: int
    ) -> torch.Tensor:
        """T-CLIP's pooled prompt embeddings (B * num_images_per_prompt, pooled_size) for a UNet that takes them."""
        if not hasattr(self.text_encoder, "pooled"):
            raise ValueError(f"the UNet takes a pooled prompt embedding but the text encoder "
                             f"{type(self.text_encoder).__name__} has no .pooled()")
        ids = self.text_encoder.tokenize(list(prompt)).to(device)
        ids_fine = self.text_encoder.tokenize(list(prompt_fine)).to(device) if prompt_fine is not None else None
        pooled = self.text_encoder.pooled(ids, ids_fine)
        return pooled.to(device=device, dtype=self.unet.dtype).repeat_interleave(num_images_per_prompt, dim=0)

    def prepare_latents(
        self,
        batch_size: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        shape = (
            batch_size,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device=device, dtype=dtype)
        # scale the initial noise by the standard deviation the scheduler expects
        return latents * self.scheduler.init_noise_sigma

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        # schedulers differ in signature: eta is DDIM-only, generator only for stochastic samplers
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    @staticmethod
    def _as_list(value: str | list[str] | None, name: str) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ValueError(f"`{name}` must be a string or a list of strings, got {type(value).__name__}: {value!r}")

    @classmethod
    def _per_prompt(cls, value: str | list[str] | None, name: str, batch_size: int) -> list[str] | None:
        """``value`` as one string per prompt (one given for all is repeated); None stays None."""
        values = cls._as_list(value, name)
        return values * batch_size if values is not None and len(values) == 1 else values

    def check_inputs(
        self,
        prompt,
        prompt_fine,
        negative_prompt,
        height,
        width,
        num_inference_steps,
        guidance_scale,
        num_images_per_prompt,
        generator,
        latents,
        output_type,
        colormap,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        callback_on_step_end_tensor_inputs=None,
        negative_prompt_fine=None,
        contrast_prompt=None,
        contrast_prompt_fine=None,
        contrast_scale=0.0,
    ) -> None:
        """Fail early, naming the argument and the value it got."""
        if prompt is None and prompt_embeds is None:
            raise ValueError("Provide `prompt` or `prompt_embeds`; both are None.")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Pass only one of `prompt` and `prompt_embeds`, not both.")
        prompts = self._as_list(prompt, "prompt")
        if prompts is not None and len(prompts) == 0:
            raise ValueError("`prompt` must not be an empty list.")
        batch = len(prompts) if prompts is not None else None
        if prompt_embeds is not None:
            if not torch.is_tensor(prompt_embeds) or prompt_embeds.ndim != 3:
                raise ValueError(
                    f"`prompt_embeds` must be a tensor (B, L, hidden_size), got "
                    f"{tuple(prompt_embeds.shape) if torch.is_tensor(prompt_embeds) else type(prompt_embeds).__name__}"
                )
            batch = prompt_embeds.shape[0]
            if prompt_fine is not None:
                raise ValueError("`prompt_fine` cannot be used with `prompt_embeds` (encode both prompts yourself).")
        for name, value in (("prompt_fine", prompt_fine), ("negative_prompt", negative_prompt),
                            ("negative_prompt_fine", negative_prompt_fine), ("contrast_prompt", contrast_prompt),
                            ("contrast_prompt_fine", contrast_prompt_fine)):
            values = self._as_list(value, name)
            if values is not None and len(values) not in (1, batch):
                raise ValueError(f"`{name}` has {len(values)} entries but `prompt` has {batch}; give 1 or {batch}.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass only one of `negative_prompt` and `negative_prompt_embeds`, not both.")
        if negative_prompt_fine is not None and negative_prompt is None:
            raise ValueError("`negative_prompt_fine` needs `negative_prompt` (the negative's global prompt).")
        if (isinstance(contrast_scale, bool) or not isinstance(contrast_scale, numbers.Real)
                or not math.isfinite(contrast_scale) or contrast_scale < 0):
            raise ValueError(f"`contrast_scale` must be a finite number >= 0, got {contrast_scale!r}")
        if (contrast_prompt is None) != (contrast_scale == 0):
            raise ValueError("`contrast_prompt` and `contrast_scale` > 0 go together: got contrast_prompt="
                             f"{contrast_prompt!r}, contrast_scale={contrast_scale!r}")
        if contrast_prompt_fine is not None and contrast_prompt is None:
            raise ValueError("`contrast_prompt_fine` needs `contrast_prompt` (the contrast's global prompt).")
        if contrast_prompt is not None and prompt_embeds is not None:
            raise ValueError("`contrast_prompt` needs `prompt` as text, not `prompt_embeds`.")
        if contrast_prompt is not None and prompt_fine is not None and contrast_prompt_fine is None:
            raise ValueError("`prompt_fine` is given, so the contrast needs its own fine prompt too: pass "
                             "`contrast_prompt_fine` (the fine prompt with the same fact edited); otherwise the "
                             "contrast would differ from the prompt in every fine-prompt word, not in one fact.")
        if negative_prompt_embeds is not None and (
            prompt_embeds is None or negative_prompt_embeds.shape != prompt_embeds.shape
        ):
            raise ValueError(
                "`negative_prompt_embeds` needs `prompt_embeds` of the same shape, got "
                f"{tuple(negative_prompt_embeds.shape)} vs "
                f"{None if prompt_embeds is None else tuple(prompt_embeds.shape)}"
            )

        # The latent grid must survive the UNet's downsampling: one factor 2 per down block but the last.
        unet_factor = 2 ** (len(self.unet.config.down_block_types) - 1)
        multiple = self.vae_scale_factor * unet_factor
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
            if value % multiple != 0:
                raise ValueError(
                    f"`{name}` must be divisible by {multiple} (VAE factor {self.vae_scale_factor} x UNet factor "
                    f"{unet_factor}), got {value}"
                )
        if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be a number >= 0 (1 or less disables guidance), got {guidance_scale!r}")
        if not isinstance(num_images_per_prompt, int) or isinstance(num_images_per_prompt, bool) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive integer, got {num_images_per_prompt!r}")
        total = batch * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators but {total} images are requested "
                f"({batch} prompts x {num_images_per_prompt} per prompt)."
            )
        if latents is not None:
            expected = (
                total,
                self.unet.config.in_channels,
                height // self.vae_scale_factor,
                width // self.vae_scale_factor,
            )
            if not torch.is_tensor(latents) or tuple(latents.shape) != expected:
                got = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
                raise ValueError(f"`latents` must have shape {expected}, got {got}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")
        check_colormap(colormap)
        if colormap is not None and output_type in ("uint16", "latent"):
            raise ValueError(
                f"`colormap` renders 8-bit colour and cannot be combined with output_type={output_type!r}; "
                "use 'pil', 'np' or 'pt'."
            )
        if callback_on_step_end_tensor_inputs is not None:
            bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
            if bad:
                raise ValueError(
                    f"`callback_on_step_end_tensor_inputs` must be among {self._callback_tensor_inputs}, got {bad}"
                )

    def postprocess(self, images: torch.Tensor, output_type: str, colormap: Colormap | None):
        """Turn decoded images (B, 1, H, W) in [0, 1] into `output_type` (see the output dataclass)."""
        images = images.float().cpu()
        if output_type == "pt" and colormap is None:
            return images
        if output_type == "uint16":
            return np.round(images.permute(0, 2, 3, 1).numpy() * 65535.0).astype(np.uint16)
        gray = images[:, 0].numpy()  # (B, H, W)
        if colormap is not None:
            rgb = apply_colormap(gray, colormap)  # uint8 (B, H, W, 3)
            if output_type == "pil":
                return [PIL.Image.fromarray(im, mode="RGB") for im in rgb]
            rgb = rgb.astype(np.float32) / 255.0
            return torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous() if output_type == "pt" else rgb
        if output_type == "pil":
            return [PIL.Image.fromarray(np.round(im * 255.0).astype(np.uint8), mode="L") for im in gray]
        return gray[..., None]  # "np": (B, H, W, 1)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        prompt_fine: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_fine: str | list[str] | None = None,
        contrast_prompt: str | list[str] | None = None,
        contrast_prompt_fine: str | list[str] | None = None,
        contrast_scale: float = 0.0,
        guidance_interval: tuple[float, float] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        colormap: Colormap | None = None,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        return_dict: bool = True,
    ) -> ThermalDiffusionPipelineOutput | tuple:
        r"""
        Generate thermal images from text.

        Args:
            prompt (`str` or `list[str]`):
                The scene description (IR-Cap's global caption style: "An infrared thermal image of ...").
            prompt_fine (`str` or `list[str]`, *optional*):
                The fine-grained heat-signature description ("Thermal infrared image ..."), one per prompt (or one
                for all). None: the text encoder's mode decides (fused/concat reuse `prompt`).
            negative_prompt (`str` or `list[str]`, *optional*):
                What to steer away from under classifier-free guidance; default the empty prompt.
            negative_prompt_fine (`str` or `list[str]`, *optional*):
                The negative's fine-grained prompt (with `negative_prompt`), e.g. the fine caption of the same scene
                with one fact edited, so that guidance pushes along that fact (`thermgen.ircap.swap.contrast_captions`).
                None: `negative_prompt` serves as both.
            contrast_prompt, contrast_prompt_fine (`str` or `list[str]`, *optional*), contrast_scale (`float`):
                Contrastive guidance along one fact: the prompt with that fact edited ("... by day" for a night
                prompt; `thermgen.ircap.swap.contrast_captions` renders it from IR-Cap facts). Each step's noise
                prediction becomes `u + guidance_scale * (c - u) + contrast_scale * (c - k)` (u: the negative prompt,
                c: the prompt, k: the contrast prompt), so the stated value is pushed away from the edited one while
                classifier-free guidance keeps every other fact (without guidance, `guidance_scale` <= 1:
                `c + contrast_scale * (c - k)`); costs one more UNet evaluation per step. With `prompt_fine`, give
                `contrast_prompt_fine` too (the fine prompt with the same fact edited).
            guidance_interval (`(float, float)`, *optional*):
                Guidance in a limited interval of noise levels (Kynkaanniemi et al. 2024, "Applying Guidance in a
                Limited Interval Improves Sample and Distribution Quality in Diffusion Models"): classifier-free and
                contrastive guidance apply only at the steps whose noise level sigma = sqrt((1 - alpha_bar_t) /
                alpha_bar_t) lies in `(low, high]`; the other steps take the prompt's prediction alone and skip the
                other branches. None (default): every step. The paper's interval for ImageNet-512 latents is
                `(0.28, 5.42)`.
            height (`int`, *optional*), width (`int`, *optional*):
                Output size in pixels; default `unet.config.sample_size * vae_scale_factor`. Must be divisible by
                the VAE factor times the UNet's downsampling factor.
            num_inference_steps (`int`, defaults to 50):
                Denoising steps.
            guidance_scale (`float`, defaults to 5.0):
                Classifier-free guidance weight; 1 or less runs the conditional branch only (half the compute).
            num_images_per_prompt (`int`, defaults to 1):
                Images per prompt; the output is ordered prompt-major.
            eta (`float`, defaults to 0.0):
                DDIM's eta (ignored by other schedulers).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                For reproducible noise; a list gives each image its own generator (one per image, prompt-major).
            latents (`torch.Tensor`, *optional*):
                Initial noise (B * num_images_per_prompt, C, height / f, width / f); sampled if None.
            prompt_embeds / negative_prompt_embeds (`torch.Tensor`, *optional*):
                Precomputed token states (B, L, hidden_size) instead of `prompt` / `negative_prompt`.
            pooled_prompt_embeds / negative_pooled_prompt_embeds (`torch.Tensor`, *optional*):
                Precomputed pooled prompt embeddings (B, pooled_size) (`TCLIPTextEncoder.pooled`), needed with
                `prompt_embeds` / `negative_prompt_embeds` when the UNet takes them (`takes_pooled`).
            output_type (`str`, defaults to `"pil"`):
                `"pil"`, `"np"`, `"pt"`, `"uint16"` or `"latent"`; see [`ThermalDiffusionPipelineOutput`].
            colormap (`str` or callable, *optional*):
                Render through a colormap ("white-hot", "black-hot", "ironbow", a matplotlib name, or a callable
                float (H, W) -> uint8 (H, W, 3)); only with "pil", "np", "pt".
            callback_on_step_end (callable, *optional*):
                Called as `callback(pipe, step, timestep, callback_kwargs)` after every step; may return a dict
                that replaces the tensors named in `callback_on_step_end_tensor_inputs` (default `["latents"]`).
            return_dict (`bool`, defaults to True):
                Return a [`ThermalDiffusionPipelineOutput`] rather than a tuple `(images,)`.

        Examples:
            ```py
            >>> from pipelines import ThermalDiffusionPipeline
            >>> pipe = ThermalDiffusionPipeline.from_pretrained("runs/default/pipeline")
            >>> image = pipe("An infrared thermal image of a parking lot at night",
            ...              generator=torch.Generator().manual_seed(0), colormap="ironbow").images[0]
            ```
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["latents"]

        # 0. Default size from the UNet's training resolution
        sample_size = self.unet.config.sample_size
        sample_hw = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        height = sample_hw[0] * self.vae_scale_factor if height is None else height
        width = sample_hw[1] * self.vae_scale_factor if width is None else width

        # 1. Check inputs
        self.check_inputs(
            prompt,
            prompt_fine,
            negative_prompt,
            height,
            width,
            num_inference_steps,
            guidance_scale,
            num_images_per_prompt,
            generator,
            latents,
            output_type,
            colormap,
            prompt_embeds,
            negative_prompt_embeds,
            callback_on_step_end_tensor_inputs,
            negative_prompt_fine,
            contrast_prompt,
            contrast_prompt_fine,
            contrast_scale,
        )
        self._guidance_scale = float(guidance_scale)
        self._interrupt = False
        device = self._execution_device
        if guidance_interval is not None:
            lo_hi = tuple(guidance_interval) if isinstance(guidance_interval, (tuple, list)) else ()
            if (len(lo_hi) != 2 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                                           for v in lo_hi) or not 0 <= lo_hi[0] < lo_hi[1]):
                raise ValueError("`guidance_interval` must be two finite noise levels (low, high) with 0 <= low < high, "
                                 f"got {guidance_interval!r}")

        if not self.takes_pooled and (pooled_prompt_embeds is not None or negative_pooled_prompt_embeds is not None):
            raise ValueError("this pipeline's UNet takes no pooled prompt embedding (class_embed_type is not "
                             "'projection'): do not pass pooled_prompt_embeds / negative_pooled_prompt_embeds")

        # 2. Encode prompts; the empty prompt is the unconditional branch
        if prompt_embeds is None:
            prompts = self._as_list(prompt, "prompt")
            batch_size = len(prompts)
            fine = self._per_prompt(prompt_fine, "prompt_fine", batch_size)
            prompt_embeds = self.encode_prompt(prompts, fine, device, num_images_per_prompt)
            if self.takes_pooled:
                pooled_prompt_embeds = (self.encode_pooled(prompts, fine, device, num_images_per_prompt)
                                        if pooled_prompt_embeds is None else
                                        self._given_pooled(pooled_prompt_embeds, device, num_images_per_prompt))
        else:
            batch_size = prompt_embeds.shape[0]
            fine = None
            prompt_embeds = prompt_embeds.to(device=device, dtype=self.unet.dtype).repeat_interleave(
                num_images_per_prompt, dim=0
            )
            if self.takes_pooled:
                if pooled_prompt_embeds is None:
                    raise ValueError("this pipeline's UNet takes a pooled prompt embedding: pass `pooled_prompt_embeds` "
                                     "(TCLIPTextEncoder.pooled) with `prompt_embeds`")
                pooled_prompt_embeds = self._given_pooled(pooled_prompt_embeds, device, num_images_per_prompt)
        if self.do_classifier_free_guidance:
            if negative_prompt_embeds is None:
                negatives = self._per_prompt(negative_prompt, "negative_prompt", batch_size) or [""] * batch_size
                # Give the negative branch a fine prompt too when the positive has one, so both branches
                # take the same path through the encoder (and the same token length in concat mode).
                neg_fine = self._per_prompt(negative_prompt_fine, "negative_prompt_fine", batch_size)
                if neg_fine is None and fine is not None:
                    neg_fine = negatives
                negative_prompt_embeds = self.encode_prompt(negatives, neg_fine, device, num_images_per_prompt)
                if self.takes_pooled:
                    negative_pooled_prompt_embeds = (
                        self.encode_pooled(negatives, neg_fine, device, num_images_per_prompt)
                        if negative_pooled_prompt_embeds is None else
                        self._given_pooled(negative_pooled_prompt_embeds, device, num_images_per_prompt))
            else:
                negative_prompt_embeds = negative_prompt_embeds.to(
                    device=device, dtype=self.unet.dtype
                ).repeat_interleave(num_images_per_prompt, dim=0)
                if self.takes_pooled:
                    if negative_pooled_prompt_embeds is None:
                        raise ValueError("this pipeline's UNet takes a pooled prompt embedding: pass "
                                         "`negative_pooled_prompt_embeds` with `negative_prompt_embeds`")
                    negative_pooled_prompt_embeds = self._given_pooled(
                        negative_pooled_prompt_embeds, device, num_images_per_prompt)

        contrast_embeds = contrast_pooled = None
        if contrast_prompt is not None:
            contrasts = self._per_prompt(contrast_prompt, "contrast_prompt", batch_size)
            c_fine = self._per_prompt(contrast_prompt_fine, "contrast_prompt_fine", batch_size)
            contrast_embeds = self.encode_prompt(contrasts, c_fine, device, num_images_per_prompt)
            if self.takes_pooled:
                contrast_pooled = self.encode_pooled(contrasts, c_fine, device, num_images_per_prompt)

        # 3. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. Initial noise
        latents = self.prepare_latents(
            batch_size * num_images_per_prompt, height, width, prompt_embeds.dtype, device, generator, latents
        )
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # Which steps are guided (guidance_interval: by the noise level of their timestep)
        guided = [True] * len(timesteps)
        if guidance_interval is not None:
            if getattr(self.scheduler, "alphas_cumprod", None) is None:
                raise ValueError(f"`guidance_interval` reads the noise level from the scheduler's alphas_cumprod, which "
                                 f"{type(self.scheduler).__name__} does not have")
            ac = self.scheduler.alphas_cumprod.double()
            idx = timesteps.detach().cpu().round().long().clamp(0, len(ac) - 1)
            sigmas = ((1 - ac[idx]) / ac[idx]).sqrt().tolist()
            guided = [float(guidance_interval[0]) < sg <= float(guidance_interval[1]) for sg in sigmas]
        self._guided_steps = sum(guided)

        # 5. Denoising loop
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                # Branches, in this order: [negative,] [contrast,] prompt.
                contexts, pooled = [prompt_embeds], [pooled_prompt_embeds]
                if contrast_embeds is not None and guided[i]:
                    contexts.insert(0, contrast_embeds)
                    pooled.insert(0, contrast_pooled)
                if self.do_classifier_free_guidance and guided[i]:
                    contexts.insert(0, negative_prompt_embeds)
                    pooled.insert(0, negative_pooled_prompt_embeds)
                model_input = torch.cat([latents] * len(contexts))
                context = torch.cat(contexts)
                class_labels = torch.cat(pooled) if self.takes_pooled else None
                model_input = self.scheduler.scale_model_input(model_input, t)
                noise_pred = self.unet(
                    model_input, t, encoder_hidden_states=context, class_labels=class_labels, return_dict=False
                )[0]
                preds = list(noise_pred.chunk(len(contexts)))
                noise_text = preds[-1]
                noise_pred = noise_text
                if self.do_classifier_free_guidance and guided[i]:
                    noise_pred = preds[0] + self.guidance_scale * (noise_text - preds[0])
                if contrast_embeds is not None and guided[i]:
                    noise_pred = noise_pred + float(contrast_scale) * (noise_text - preds[-2])

                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    callback_kwargs = {}
                    for k in callback_on_step_end_tensor_inputs:
                        callback_kwargs[k] = locals()[k]
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
                    prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = callback_outputs.pop("negative_prompt_embeds", negative_prompt_embeds)

                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        # 6. Decode and post-process
        if output_type == "latent":
            images = latents
        else:
            images = self.postprocess(decode_thermal(self.vae, latents), output_type, colormap)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ThermalDiffusionPipelineOutput(images=images)


def _register_in_diffusers_namespace() -> None:
    """Let the generic ``DiffusionPipeline.from_pretrained(folder)`` resolve our class name.

    diffusers looks ``model_index.json``'s ``_class_name`` up as an attribute of the ``diffusers`` module; the
    alternative (a ``pipeline.py`` in the folder) executes code from the folder and needs ``trust_remote_code``.
    """
    import diffusers

    if getattr(diffusers, "ThermalDiffusionPipeline", None) is None:
        setattr(diffusers, "ThermalDiffusionPipeline", ThermalDiffusionPipeline)


_register_in_diffusers_namespace()
