"""Few-step diffusion img2img over a local diffusers pipeline folder, batched across frames.

Works with SD-Turbo / LCM-style folders (``model_index.json`` with ``unet``, ``vae``,
``scheduler``, ``text_encoder``, ``tokenizer``). Every component loads with
``from_pretrained(folder, subfolder=..., local_files_only=True)`` from safetensors:
nothing downloads, and pickled ``.bin`` weights are refused.

One frame: encode to latents, noise them to timestep ``t_0`` (set by ``strength``),
then ``steps`` (1-4) denoising steps ``t_0 > t_1 > ...``; after step i the predicted
clean latent is re-noised to ``t_{i+1}`` with a fixed noise tensor (seeded), as
StreamDiffusion and LCM multistep sampling do. LCM's boundary scalings (``c_skip``,
``c_out``) are used when the scheduler provides them. No classifier-free guidance
(turbo/LCM models are distilled without it).

Stream batching (StreamDiffusion, Kodaira et al. 2023): with ``steps = n`` the stage
keeps ``n - 1`` frames in flight; each :meth:`DiffusionStylizer.push` runs ONE UNet
call on a batch holding the new frame at step 0, the previous frame at step 1, ...,
frame k-n+1 at step n-1, and returns the frame that finished (so output lags the
input by ``n - 1`` frames; :meth:`flush` drains the pipe). The result for every frame
equals running its n steps alone (tests check this).

Similarity filter: a frame whose cosine similarity with the previous input (in
[-1, 1] pixel space) is at least ``similarity_threshold`` is not re-styled; the
previous output is returned instead, at most ``max_skip_frames`` times in a row.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from latentscape.errors import ConfigError, WeightsError
from latentscape.stylize.base import as_batch, pad_to_multiple

REQUIRED = ("unet", "vae", "scheduler")
TEXT = ("text_encoder", "tokenizer")
ALLOWED_LIBRARIES = ("diffusers", "transformers")


@dataclass
class DiffusionConfig:
    """Settings of the img2img stage."""

    prompt: str = ""
    """Text prompt (ignored when prompt embeddings are passed in)."""
    strength: float = 0.5
    """How far into the noise schedule the frame is pushed (0 < strength <= 1); 1 ignores the input."""
    steps: int = 2
    """Denoising steps per frame, 1 to 4."""
    seed: int = 0
    """Seeds the fixed noise: the same frames give the same output."""
    similarity_threshold: float | None = 0.98
    """Skip frames at least this cosine-similar to the previous one (StreamDiffusion: 0.98); None disables."""
    max_skip_frames: int = 10
    """Re-style anyway after this many skipped frames in a row."""
    stream_batch: bool = True
    """Batch the steps of consecutive frames into one UNet call (False: each frame runs its steps alone)."""

    def validate(self) -> "DiffusionConfig":
        if not 1 <= self.steps <= 4:
            raise ConfigError(f"diffusion steps must be 1 to 4, got {self.steps}")
        if not 0 < self.strength <= 1:
            raise ConfigError(f"diffusion strength must be in (0, 1], got {self.strength}")
        if self.similarity_threshold is not None and not 0 < self.similarity_threshold <= 1:
            raise ConfigError(f"similarity_threshold must be in (0, 1] or None, got {self.similarity_threshold}")
        if self.max_skip_frames < 0:
            raise ConfigError(f"max_skip_frames must be >= 0, got {self.max_skip_frames}")
        return self


def _has_weights(sub: Path) -> bool:
    return any(sub.glob("*.safetensors")) or any(sub.glob("*.safetensors.index.json"))


def check_pipeline_folder(folder: str | Path, *, need_text: bool = True) -> dict:
    """Validate a diffusers pipeline folder; returns its model_index. WeightsError names what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError("diffusers pipeline folder does not exist", path=folder,
                           hint="point to a local folder saved with save_pretrained (e.g. a downloaded sd-turbo)")
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise WeightsError("not a diffusers pipeline folder: model_index.json is missing", path=folder,
                           hint="pass the folder that holds model_index.json, unet/, vae/, scheduler/ ...")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"model_index.json is not valid JSON: {err}", path=index_path) from None
    needed = REQUIRED + (TEXT if need_text else ())
    for name in needed:
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1]):
            raise WeightsError(f"model_index.json lists no '{name}' component", path=index_path,
                               hint=f"an img2img folder needs {', '.join(needed)}")
        if entry[0] not in ALLOWED_LIBRARIES:
            raise WeightsError(f"component '{name}' comes from library {entry[0]!r}; only {ALLOWED_LIBRARIES} load",
                               path=index_path)
        sub = folder / name
        if not sub.is_dir():
            raise WeightsError(f"component folder '{name}/' is missing", path=sub)
        if name in ("unet", "vae", "text_encoder"):
            if not (sub / "config.json").is_file():
                raise WeightsError(f"'{name}/config.json' is missing", path=sub / "config.json")
            if not _has_weights(sub):
                bins = sorted(p.name for p in sub.glob("*.bin"))
                raise WeightsError(f"'{name}/' has no .safetensors weights" + (f" (found {bins})" if bins else ""),
                                   path=sub, hint="weights load from safetensors only; convert .bin files once "
                                                  "with a trusted tool")
        if name == "scheduler" and not (sub / "scheduler_config.json").is_file():
            raise WeightsError("'scheduler/scheduler_config.json' is missing", path=sub / "scheduler_config.json")
    return index


def _load_component(folder: Path, name: str, entry: list, **kwargs):
    library, cls_name = entry
    try:
        cls = getattr(importlib.import_module(library), cls_name)
    except (ImportError, AttributeError):
        raise WeightsError(f"component '{name}' needs {library}.{cls_name}, which this {library} does not have",
                           path=folder / "model_index.json", hint=f"upgrade {library}") from None
    try:
        return cls.from_pretrained(folder, subfolder=name, local_files_only=True, **kwargs)
    except (OSError, ValueError, EnvironmentError, RuntimeError, KeyError, TypeError) as err:
        raise WeightsError(f"cannot load component '{name}' ({cls_name}): {err}", path=folder / name) from None


class DiffusionStylizer:
    """Few-step img2img stage; a :class:`~latentscape.stylize.base.Stylizer`."""

    def __init__(self, *, unet, vae, scheduler, config: DiffusionConfig | None = None, text_encoder=None,
                 tokenizer=None, prompt_embeds: Tensor | None = None, device: str | torch.device = "cpu",
                 half: bool = False, name: str = "diffusion", fingerprint: str = ""):
        self.config = (config or DiffusionConfig()).validate()
        self.device = torch.device(device)
        if half and self.device.type != "cuda":
            raise ConfigError("fp16 diffusion needs a CUDA device", hint="drop half=True on the CPU")
        self.dtype = torch.float16 if half else torch.float32
        self.unet = unet.to(self.device, self.dtype).eval().requires_grad_(False)
        self.vae = vae.to(self.device, self.dtype).eval().requires_grad_(False)
        self.scheduler = scheduler
        self.name = name
        if prompt_embeds is None:
            if text_encoder is None or tokenizer is None:
                raise ConfigError("the diffusion stage needs a text encoder and tokenizer, or prompt_embeds")
            prompt_embeds = self._encode_prompt(text_encoder.to(self.device), tokenizer, self.config.prompt)
        self.prompt_embeds = prompt_embeds.to(self.device, self.dtype)  # [1, tokens, dim]
        if self.prompt_embeds.ndim == 2:
            self.prompt_embeds = self.prompt_embeds[None]

        c = self.config
        total = int(scheduler.config.num_train_timesteps)
        start = min(total, max(1, round(c.strength * total)))
        self.timesteps = [max(0, round(start * (c.steps - i) / c.steps) - 1) for i in range(c.steps)]
        ac = scheduler.alphas_cumprod.to(torch.float64)
        ab = torch.stack([ac[t] for t in self.timesteps])
        self._a = ab.sqrt().float()             # [steps] sqrt(alpha_bar)
        self._b = (1 - ab).sqrt().float()       # [steps] sqrt(1 - alpha_bar)
        if hasattr(scheduler, "get_scalings_for_boundary_condition_discrete"):
            sc = [scheduler.get_scalings_for_boundary_condition_discrete(t) for t in self.timesteps]
            self._c_skip = torch.tensor([float(s[0]) for s in sc])
            self._c_out = torch.tensor([float(s[1]) for s in sc])
        else:
            self._c_skip, self._c_out = torch.zeros(c.steps), torch.ones(c.steps)
        self.prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise WeightsError(f"scheduler prediction_type {self.prediction_type!r} is not supported")
        self.vae_scale = float(getattr(vae.config, "scaling_factor", 1.0))
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        unet_factor = 2 ** (len(unet.config.block_out_channels) - 1)
        self.pad_multiple = vae_factor * unet_factor

        payload = json.dumps({"fp": fingerprint, "cfg": c.__dict__, "t": self.timesteps}, sort_keys=True, default=str)
        self.version = hashlib.sha256(payload.encode() + self.prompt_embeds.float().cpu().numpy().tobytes()).hexdigest()[:16]
        self.skipped = 0          # frames the similarity filter skipped, in total
        self.unet_calls = 0       # UNet evaluations (one per batch)
        self.reset()

    # -- loading -------------------------------------------------------------

    @classmethod
    def from_folder(cls, folder: str | Path, config: DiffusionConfig | None = None, *,
                    prompt_embeds: Tensor | None = None, device: str | torch.device = "cpu",
                    half: bool = False) -> "DiffusionStylizer":
        """Load unet, vae, scheduler (and text encoder + tokenizer unless ``prompt_embeds``) from ``folder``."""
        config = (config or DiffusionConfig()).validate()
        folder = Path(folder)
        index = check_pipeline_folder(folder, need_text=prompt_embeds is None)
        dtype = torch.float16 if half else torch.float32
        parts = {name: _load_component(folder, name, index[name], **(
            {"use_safetensors": True, "torch_dtype": dtype} if name != "scheduler" else {}))
            for name in REQUIRED}
        if prompt_embeds is None:
            parts["text_encoder"] = _load_component(folder, "text_encoder", index["text_encoder"],
                                                    use_safetensors=True)
            parts["tokenizer"] = _load_component(folder, "tokenizer", index["tokenizer"])
        h = hashlib.sha256()
        for p in sorted(folder.rglob("*.json")):
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
        for p in sorted(folder.rglob("*.safetensors")):  # bytes are covered by scene.lock; sizes catch swaps here
            h.update(p.relative_to(folder).as_posix().encode() + str(p.stat().st_size).encode())
        return cls(**parts, config=config, prompt_embeds=prompt_embeds, device=device, half=half,
                   name=f"diffusion:{folder.name}", fingerprint=h.hexdigest())

    @torch.inference_mode()
    def _encode_prompt(self, text_encoder, tokenizer, prompt: str) -> Tensor:
        ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(self.device)
        return text_encoder(ids)[0]

    # -- math ----------------------------------------------------------------

    def _noise(self, i: int, shape: torch.Size) -> Tensor:
        key = (i, tuple(shape))
        if key not in self._noise_cache:
            g = torch.Generator().manual_seed(self.config.seed * 131 + i)
            self._noise_cache[key] = torch.randn(shape, generator=g).to(self.device, self.dtype)
        return self._noise_cache[key]

    @torch.inference_mode()
    def _encode(self, x: Tensor) -> Tensor:  # [N,3,H,W] in [0,1] (padded) -> latents [N,4,h,w]
        enc = self.vae.encode(x.to(self.device, self.dtype) * 2 - 1)
        z = enc.latent_dist.mean if hasattr(enc, "latent_dist") else enc.latents
        return z * self.vae_scale

    @torch.inference_mode()
    def _decode(self, z: Tensor) -> Tensor:  # latents -> [N,3,H,W] in [0,1]
        return (self.vae.decode(z / self.vae_scale).sample.float() / 2 + 0.5).clamp(0, 1)

    @torch.inference_mode()
    def _denoise(self, x: Tensor, stage: Tensor) -> Tensor:
        """One UNet call on latents ``x`` [B,4,h,w] whose rows sit at step indices ``stage`` [B]; returns x0 [B,...]."""
        t = torch.tensor([self.timesteps[int(s)] for s in stage], device=self.device)
        emb = self.prompt_embeds.expand(x.shape[0], -1, -1)
        out = self.unet(x, t, encoder_hidden_states=emb).sample
        self.unet_calls += 1
        view = (-1, 1, 1, 1)
        a = self._a[stage].to(self.device, self.dtype).view(view)
        b = self._b[stage].to(self.device, self.dtype).view(view)
        if self.prediction_type == "epsilon":
            x0 = (x - b * out) / a
        elif self.prediction_type == "v_prediction":
            x0 = a * x - b * out
        else:
            x0 = out
        c_skip = self._c_skip[stage].to(self.device, self.dtype).view(view)
        c_out = self._c_out[stage].to(self.device, self.dtype).view(view)
        return c_out * x0 + c_skip * x

    def _renoise(self, x0: Tensor, i: int) -> Tensor:
        return self._a[i].item() * x0 + self._b[i].item() * self._noise(i, x0.shape[1:])[None]

    # -- streaming -------------------------------------------------------------

    def reset(self) -> None:
        """Drop in-flight frames and the similarity filter's memory."""
        self._inflight: list[tuple[int, int, Tensor]] = []  # (frame id, step index, latent [4,h,w])
        self._shape: tuple | None = None                     # (H, W) of the frames in flight
        self._tickets: list[int | None] = []                 # outputs owed, in input order (None: a skipped frame)
        self._results: dict[int, Tensor] = {}
        self._next_id = 0
        self._prev_input: Tensor | None = None
        self._last_output: Tensor | None = None
        self._skip_run = 0
        self._noise_cache: dict = {}

    def _similar(self, frame: Tensor) -> bool:
        th = self.config.similarity_threshold
        prev, self._prev_input = self._prev_input, frame
        if th is None or prev is None or prev.shape != frame.shape:
            return False
        sim = F.cosine_similarity((frame * 2 - 1).flatten(), (prev * 2 - 1).flatten(), dim=0)
        return bool(sim >= th)

    def _advance(self, new: tuple[int, Tensor] | None) -> None:
        """Enter ``new`` = (id, latent) at step 0 (if any) and run one batched UNet call over all in flight."""
        items = ([(new[0], 0, self._renoise(new[1], 0))] if new is not None else []) + self._inflight
        if not items:
            return
        stage = torch.tensor([s for _, s, _ in items])
        x0 = self._denoise(torch.stack([x for _, _, x in items]), stage)
        done, keep = [], []
        for (fid, s, _), z in zip(items, x0):
            if s == self.config.steps - 1:
                done.append((fid, z))
            else:
                keep.append((fid, s + 1, self._renoise(z, s + 1)))
        self._inflight = keep
        if done:
            h, w = self._shape
            images = self._decode(torch.stack([z for _, z in done]))[..., :h, :w]
            self._results.update({fid: img for (fid, _), img in zip(done, images)})

    def _emit(self) -> list[Tensor]:
        out = []
        while self._tickets:
            fid = self._tickets[0]
            if fid is None:  # a skipped frame repeats the output of the frame before it
                out.append(self._last_output.clone())
            elif fid in self._results:
                self._last_output = self._results.pop(fid)
                out.append(self._last_output)
            else:
                break
            self._tickets.pop(0)
        return out

    def push(self, frame: Tensor) -> list[Tensor]:
        """Feed one frame ``[3,H,W]``; returns finished frames in input order: usually one, lagging
        ``steps - 1`` frames, none while the pipe fills. A frame the similarity filter skips costs no
        UNet call and repeats the output of the frame before it."""
        x, single = as_batch(frame)
        if not single:
            raise ConfigError("push takes one frame [3, H, W]; call the stylizer for batches")
        x = x.detach().to(self.device, torch.float32)
        if self._similar(x[0]) and self._skip_run < self.config.max_skip_frames:
            self._skip_run += 1
            self.skipped += 1
            self._tickets.append(None)
            return self._emit()
        self._skip_run = 0
        out: list[Tensor] = []
        if self._shape is not None and self._shape != tuple(x.shape[-2:]):
            out += self.flush()  # resolution changed: finish what is in flight first
        xp, h, w = pad_to_multiple(x, self.pad_multiple)
        self._shape = (h, w)
        fid, self._next_id = self._next_id, self._next_id + 1
        self._tickets.append(fid)
        z = self._encode(xp)[0]
        if self.config.stream_batch:
            self._advance((fid, z))
        else:
            cur = self._renoise(z, 0)
            for i in range(self.config.steps):
                x0 = self._denoise(cur[None], torch.tensor([i]))[0]
                cur = self._renoise(x0, i + 1) if i + 1 < self.config.steps else x0
            self._results[fid] = self._decode(cur[None])[0, :, :h, :w]
        return out + self._emit()

    def flush(self) -> list[Tensor]:
        """Finish every frame in flight; returns the outputs still owed, in input order."""
        while self._inflight:
            self._advance(None)
        return self._emit()

    def __call__(self, frame: Tensor) -> Tensor:  # [3,H,W] or [N,3,H,W] -> same
        """Stylize frames in order, stream-batched, and flush: output ``i`` belongs to input ``i``."""
        x, single = as_batch(frame)
        outs: list[Tensor] = []
        for f in x:
            outs += self.push(f)
        outs += self.flush()
        y = torch.stack(outs).to(frame.device, frame.dtype)
        return y[0] if single else y
