"""ONNX export of a tiny planner checkpoint: every graph checked and at parity with PyTorch; the ONNX
Runtime sampling loop gives the PyTorch plan for the same noise; bad paths and shapes give clear errors.

One module-scoped export (~40 s on 2 CPU cores) serves every test here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from v4s_agent.export.runtime_ort import OrtGraph, OrtIDM, OrtPlannerBackend

TOL_LATENTS = 1e-4  # stated tolerance: max abs error of the final latents, ORT vs PyTorch
TOL_FRAMES = 1  # uint8 levels (a value on a rounding boundary may flip)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A saved tiny checkpoint (pipeline/ + idm/) with a non-trivial camera embedder, and its export."""
    from v4s_agent.export.graphs import export_planner

    from v4s_agent.agent.inverse_dynamics import IDMConfig, InverseDynamicsModel
    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline

    root = tmp_path_factory.mktemp("ckpt")
    pipe = Video4SpatialPipeline.from_config_name("tiny", seed=0)
    with torch.no_grad():  # the camera MLP starts at zero; make it matter so camera parity is tested
        g = torch.Generator().manual_seed(1)
        for p in pipe.transformer.camera_embedder.linear_2.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    pipe.save_pretrained(root / "pipeline")
    torch.manual_seed(0)
    InverseDynamicsModel(IDMConfig(height=16, width=16, base_channels=8, num_stages=2)).save_pretrained(
        root / "idm"
    )
    result = export_planner(checkpoint=root, out_dir=root / "onnx", fp16_denoiser=True)
    ref = Video4SpatialPipeline.from_pretrained(str(root / "pipeline"))
    ref.set_progress_bar_config(disable=True)
    return {"root": root, "onnx": root / "onnx", "result": result, "pipe": ref}


def _inputs(cfg: Any, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    k, h, w, t = cfg.num_context_frames, cfg.height, cfg.width, cfg.num_target_frames
    return {
        "context": rng.integers(0, 256, (k, h, w, 3), dtype=np.uint8),
        "context_positions": np.sort(rng.choice(40, k, replace=False)),
        "observation": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "camera": rng.standard_normal((t, 12)).astype(np.float32),
    }


# ------------------------------------------------------------------------------------------------ export


def test_every_graph_exported_checked_and_at_parity(ckpt: dict[str, Any]) -> None:
    import onnx

    out: Path = ckpt["onnx"]
    parity = json.loads((out / "parity.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    # pixel space: no VAE graphs; denoiser_fp16 for TensorRT 11 (fp16 inside, float32 I/O)
    assert set(manifest["components"]) == {"denoiser", "denoiser_fp16", "text_encoder", "idm"}
    for name in manifest["components"]:
        onnx.checker.check_model(str(out / name / "model.onnx"))
        assert parity[name]["ok"], parity[name]
        assert parity[name]["max_abs_err"] < (5e-2 if name.endswith("_fp16") else 1e-4)
        assert "alt_shapes" in parity[name]  # second set of shapes on the dynamic axes
    assert manifest["opset"] >= 18
    den = manifest["components"]["denoiser"]
    assert den["specialised_axes"] == {}
    assert set(den["dynamic_axes"]["latents"]) == {"0", "2"}  # batch and frames (context length) dynamic
    assert (out / "tokenizer" / "tokenizer.json").is_file()


def test_dynamic_context_length(ckpt: dict[str, Any]) -> None:
    """The denoiser graph runs for other context lengths than the config's K, matching PyTorch."""
    from v4s_agent.export.graphs import denoiser_inputs

    pipe = ckpt["pipe"]
    graph = OrtGraph(ckpt["onnx"] / "denoiser" / "model.onnx", intra_op_threads=1)
    for k in (1, 5):
        inp = denoiser_inputs(pipe, 1, k, seed=k)
        with torch.no_grad():
            ref = pipe.predict_velocity(*inp.values()).numpy()
        out = graph(**{n: v.numpy() for n, v in inp.items()})["velocity"]
        assert np.abs(ref - out).max() < 1e-4


# ------------------------------------------------------------------------------------------------ runtime


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": "go to the chair"},
        {"prompt": "go to the chair", "use_camera": True},
        {"prompt": "find the guitar", "guidance_scale": 1.0, "num_inference_steps": 3},
        {"prompt": "go to the sofa", "cfg_mode": "text_only"},
        {"prompt": "", "drop_context": True},
    ],
)
def test_ort_plan_equals_pytorch_plan(ckpt: dict[str, Any], kwargs: dict[str, Any]) -> None:
    pipe = ckpt["pipe"]
    inp = _inputs(pipe.v4s_config)
    camera = inp.pop("camera") if kwargs.pop("use_camera", False) else None
    inp.pop("camera", None)
    ref = pipe(**inp, camera=camera, generator=torch.Generator().manual_seed(7), **kwargs)
    backend = OrtPlannerBackend(ckpt["onnx"], intra_op_threads=1)
    out = backend(**inp, camera=camera, generator=torch.Generator().manual_seed(7), **kwargs)
    assert np.abs(ref.latents.numpy() - out.latents).max() < TOL_LATENTS
    assert out.frames.dtype == np.uint8 and out.frames.shape == ref.frames.shape
    assert np.abs(ref.frames.astype(int) - out.frames.astype(int)).max() <= TOL_FRAMES
    assert out.box == ref.box


def test_explicit_noise_and_numpy_generator(ckpt: dict[str, Any]) -> None:
    """Explicit ``latents`` + ``context_noise`` give the PyTorch plan; a numpy Generator is reproducible."""
    from diffusers.utils.torch_utils import randn_tensor

    pipe, cfg = ckpt["pipe"], ckpt["pipe"].v4s_config
    inp = _inputs(cfg, seed=3)
    inp.pop("camera")
    c, tl, h, w = cfg.latent_channels, cfg.num_latent_target_frames, cfg.height, cfg.width
    lat = torch.randn(1, c, tl - 1, h, w, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(9)
    ref = pipe(**inp, prompt="go to the bed", latents=lat, generator=g)
    z_ctx = randn_tensor((1, c, cfg.num_context_frames, h, w), generator=torch.Generator().manual_seed(9))
    backend = OrtPlannerBackend(ckpt["onnx"], intra_op_threads=1)
    out = backend.sample(**inp, prompt="go to the bed", latents=lat.numpy(), context_noise=z_ctx.numpy())
    assert np.abs(ref.latents.numpy() - out.latents).max() < TOL_LATENTS
    a = backend(**inp, prompt="x", generator=np.random.default_rng(1)).frames
    b = backend(**inp, prompt="x", generator=np.random.default_rng(1)).frames
    np.testing.assert_array_equal(a, b)


def test_text_encoder_and_idm_match_pytorch(ckpt: dict[str, Any]) -> None:
    from v4s_agent.agent.inverse_dynamics import InverseDynamicsModel

    pipe = ckpt["pipe"]
    prompts = ["go to the chair", "", "find the red guitar next to the big window in the living room now"]
    emb_t, _ = pipe.encode_prompt(prompts)
    backend = OrtPlannerBackend(ckpt["onnx"], intra_op_threads=1)
    emb_o = backend.encode_prompt(prompts)
    assert np.abs(emb_t.numpy() - emb_o).max() < 1e-4
    assert not emb_o[1].any()  # "" is the all-zero null instruction
    idm = InverseDynamicsModel.from_pretrained(ckpt["root"] / "idm")
    frames = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).float().permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad():
        ref = torch.softmax(idm(x[:-1], x[1:]), -1).numpy()
    assert np.abs(backend.idm_probs(frames) - ref).max() < 1e-5
    ort_idm = OrtIDM(ckpt["onnx"])
    assert np.abs(ort_idm(x[:-1], x[1:]).numpy() - idm(x[:-1], x[1:]).detach().numpy()).max() < 1e-4


def test_sanitized_graphs_give_the_same_plan(ckpt: dict[str, Any], tmp_path: Path) -> None:
    """The graphs handed to TensorRT (float64 demoted, constants folded) still give the PyTorch plan."""
    pytest.importorskip("polygraphy")
    from v4s_agent.export.tensorrt_build import build_engines

    report = build_engines(ckpt["onnx"], tmp_path / "trt", sanitize_only=True)
    assert report["components"]["denoiser"]["float64_demoted"] > 0
    pipe = ckpt["pipe"]
    inp = _inputs(pipe.v4s_config, seed=4)
    ref = pipe(**inp, prompt="go to the chair", generator=torch.Generator().manual_seed(2))
    out = OrtPlannerBackend(tmp_path / "trt", intra_op_threads=1)(
        **inp, prompt="go to the chair", generator=torch.Generator().manual_seed(2)
    )
    assert np.abs(ref.latents.numpy() - out.latents).max() < 1e-3


def test_planner_uses_the_onnxruntime_backend(ckpt: dict[str, Any]) -> None:
    from v4s_agent.export import load_runtime_pipeline

    from v4s_agent.agent.planner import VideoPlanner

    assert isinstance(load_runtime_pipeline(ckpt["root"] / "pipeline"), OrtPlannerBackend)
    planner = VideoPlanner.from_pretrained(ckpt["root"], backend="onnxruntime", crosscheck="off")
    cfg = ckpt["pipe"].v4s_config
    inp = _inputs(cfg, seed=5)
    plan = planner.plan(inp["context"], inp["observation"], "go to the chair", seed=0)
    assert plan.frames.shape == (cfg.num_target_frames, cfg.height, cfg.width, 3)
    assert plan.actions.shape == (cfg.num_trajectory_frames - 1,)
    np.testing.assert_array_equal(plan.frames[0], inp["observation"])


# ------------------------------------------------------------------------------------------------ errors


def test_bad_paths_give_clear_errors(ckpt: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OrtPlannerBackend(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        OrtPlannerBackend(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((ckpt["onnx"] / "manifest.json").read_text())
    with pytest.raises(FileNotFoundError, match="denoiser"):
        OrtPlannerBackend(broken)
    from v4s_agent.export.graphs import load_models

    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        load_models(tmp_path / "no_ckpt")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_models(tmp_path)


def test_mismatched_shapes_give_clear_errors(ckpt: dict[str, Any]) -> None:
    cfg = ckpt["pipe"].v4s_config
    backend = OrtPlannerBackend(ckpt["onnx"], intra_op_threads=1)
    inp = _inputs(cfg)
    cam = inp.pop("camera")
    with pytest.raises(ValueError, match="expects 16x16"):
        backend(**{**inp, "observation": np.zeros((8, 8, 3), np.uint8)}, prompt="x")
    with pytest.raises(ValueError, match="camera must be"):
        backend(**inp, camera=cam[:2], prompt="x")
    with pytest.raises(ValueError, match="latents must have shape"):
        backend(**inp, latents=np.zeros((1, 3, 1, 4, 4), np.float32), prompt="x")
    with pytest.raises(ValueError, match="context_positions"):
        backend(**{**inp, "context_positions": np.arange(7)}, prompt="x")
    with pytest.raises(ValueError, match="text_emb must be"):
        backend(**inp, text_emb=np.zeros((1, 3, 384), np.float32))
    den = backend.graphs["denoiser"]
    from v4s_agent.export.graphs import denoiser_inputs

    feeds = {n: v.numpy() for n, v in denoiser_inputs(ckpt["pipe"], 1, 2, 0).items()}
    with pytest.raises(ValueError, match="disagrees"):
        den(**{**feeds, "frame_positions": feeds["frame_positions"][:, :-1]})
    with pytest.raises(ValueError, match="must be float32"):
        den(**{**feeds, "latents": feeds["latents"].astype(np.float64)})
    with pytest.raises(ValueError, match="missing inputs"):
        den(latents=feeds["latents"])


def test_cli(ckpt: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from v4s_agent.export.__main__ import main

    assert (
        main(["onnx", "--checkpoint", str(ckpt["root"]), "--out", str(tmp_path / "o"), "--components", "idm"])
        == 0
    )
    assert json.loads((tmp_path / "o" / "parity.json").read_text())["idm"]["ok"]
    assert main(["onnx", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "q")]) == 2
    assert (
        main(["tensorrt", "--onnx", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), "--sanitize-only"])
        == 2
    )
    # an unknown component is a clear error (exit 2, the message names it), not a traceback
    args = ["onnx", "--checkpoint", str(ckpt["root"]), "--out", str(tmp_path / "p")]
    args += ["--components", "vae_decoder"]
    assert main(args) == 2
    assert "unknown components" in capsys.readouterr().err
    try:
        import tensorrt  # noqa: F401

        return
    except ImportError:
        pass
    assert main(["tensorrt", "--onnx", str(ckpt["onnx"]), "--out", str(tmp_path / "t")]) == 2


def test_sampling_loop_on_torch_tensors(ckpt: dict[str, Any]) -> None:
    """The TensorRT backend's loop (same code on torch tensors via TorchOps), run here on CPU with the ONNX
    graphs standing in for the engines: same plan as PyTorch."""
    from v4s_agent.export.onnx_export import load_manifest
    from v4s_agent.export.runtime_ort import PlannerRuntime, TorchOps

    manifest = load_manifest(ckpt["onnx"])

    class TorchIO:
        def __init__(self, graph: OrtGraph) -> None:
            self.graph = graph

        def __call__(self, **feeds: Any) -> dict[str, torch.Tensor]:
            arrs = {
                k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in feeds.items()
            }
            return {k: torch.from_numpy(v) for k, v in self.graph(**arrs).items()}

    graphs = {
        n: TorchIO(OrtGraph(ckpt["onnx"] / c["file"], intra_op_threads=1))
        for n, c in manifest["components"].items()
    }
    runtime = PlannerRuntime(ckpt["onnx"], manifest, graphs, TorchOps(torch.device("cpu")))
    pipe = ckpt["pipe"]
    inp = _inputs(pipe.v4s_config, seed=6)
    ref = pipe(**inp, prompt="go to the chair", generator=torch.Generator().manual_seed(1))
    out = runtime(**inp, prompt="go to the chair", generator=torch.Generator().manual_seed(1))
    assert isinstance(out.latents, torch.Tensor)
    assert (ref.latents - out.latents).abs().max().item() < TOL_LATENTS
    assert np.abs(ref.frames.astype(int) - out.frames.astype(int)).max() <= TOL_FRAMES


# ------------------------------------------------------------------------------------------------ TensorRT
# No GPU / tensorrt here: a stand-in ``tensorrt`` module with the real API names records the builder calls
# and "builds" engines that run the (sanitised) ONNX graph with ONNX Runtime, reading and writing the
# tensors at the addresses given through ``set_tensor_address``. This runs our build and runtime code
# end to end on CPU tensors; it does not test TensorRT itself.


def _fake_tensorrt(record: list[Any], has_fp16_flag: bool = True) -> Any:
    import ctypes
    import types

    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.fake" if has_fp16_flag else "11.fake"
    np_of = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.int64, 4: np.bool_}
    c_of = {np.float32: ctypes.c_float, np.int64: ctypes.c_int64, np.int32: ctypes.c_int32}

    class Logger:
        WARNING = 2

        def __init__(self, level: int = 2) -> None:
            pass

    class Flag:
        pass

    trt.Logger = Logger
    trt.TensorIOMode = types.SimpleNamespace(INPUT=0, OUTPUT=1)
    trt.DataType = types.SimpleNamespace(FLOAT=0, HALF=1, INT32=2, INT64=3, BOOL=4)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16=0) if has_fp16_flag else types.SimpleNamespace()

    class Engine:
        def __init__(self, path: str) -> None:
            self.sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.ins = [i.name for i in self.sess.get_inputs()]
            self.outs = [o.name for o in self.sess.get_outputs()]
            self.types = {i.name: i.type for i in [*self.sess.get_inputs(), *self.sess.get_outputs()]}
            self.num_io_tensors = len(self.ins) + len(self.outs)

        def get_tensor_name(self, i: int) -> str:
            return [*self.ins, *self.outs][i]

        def get_tensor_mode(self, name: str) -> int:
            return 0 if name in self.ins else 1

        def get_tensor_dtype(self, name: str) -> int:
            return 3 if self.types[name] == "tensor(int64)" else 0

        def create_execution_context(self) -> Any:
            return Context(self)

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.e, self.shapes, self.addr, self.out = engine, {}, {}, None

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            self.shapes[name], self.out = tuple(shape), None
            return True

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addr[name] = ptr

        def _read(self, name: str) -> np.ndarray:
            dt = np_of[self.e.get_tensor_dtype(name)]
            n = int(np.prod(self.shapes[name]))
            buf = (c_of[dt] * n).from_address(self.addr[name])
            return np.ctypeslib.as_array(buf).reshape(self.shapes[name]).copy()

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if self.out is None:
                self.out = dict(
                    zip(
                        self.e.outs,
                        self.e.sess.run(None, {n: self._read(n) for n in self.e.ins}),
                        strict=True,
                    )
                )
            return self.out[name].shape

        def execute_async_v3(self, stream: int) -> bool:
            record.append(("execute", stream))
            for name in self.e.outs:
                arr = np.ascontiguousarray(self.out[name], np.float32)
                ctypes.memmove(self.addr[name], arr.ctypes.data, arr.nbytes)
            return True

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            return Engine(data.decode())

    class Parser:
        def __init__(self, network: Any, logger: Any) -> None:
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path: str) -> bool:
            self.network.path = path
            return True

    class Config:
        def __init__(self) -> None:
            self.profiles: list[Any] = []

        def set_flag(self, flag: int) -> None:
            record.append(("set_flag", flag))

        def set_memory_pool_limit(self, pool: int, size: int) -> None:
            record.append(("workspace", size))

        def create_timing_cache(self, data: bytes) -> bytes:
            return data

        def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
            record.append(("timing_cache", len(cache)))
            return True

        def get_timing_cache(self) -> Any:
            return types.SimpleNamespace(serialize=lambda: b"cache")

        def add_optimization_profile(self, profile: Any) -> int:
            self.profiles.append(profile)
            return 0

    class Profile(dict):
        def set_shape(self, name: str, mn: Any, opt: Any, mx: Any) -> None:
            self[name] = (list(mn), list(opt), list(mx))

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Any:
            record.append(("create_network", flags))
            return types.SimpleNamespace(path=None)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Any, config: Config) -> bytes:
            record.append(
                ("build", Path(network.path).name, dict(config.profiles[0]) if config.profiles else {})
            )
            return network.path.encode()

    trt.Runtime, trt.OnnxParser, trt.Builder = Runtime, Parser, Builder
    return trt


@pytest.mark.parametrize("has_fp16_flag", [True, False], ids=["trt10-fp16-flag", "trt11-strongly-typed"])
def test_tensorrt_build_and_runtime_code_path(
    ckpt: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_fp16_flag: bool
) -> None:
    import sys
    import types

    pytest.importorskip("polygraphy")
    record: list[Any] = []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(record, has_fp16_flag))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(cuda_stream=0)
    )
    from v4s_agent.export.runtime_trt import TrtPlannerBackend
    from v4s_agent.export.tensorrt_build import build_engines

    report = build_engines(ckpt["onnx"], tmp_path / "trt", workspace_gib=1)
    assert (tmp_path / "trt" / "timing.cache").read_bytes() == b"cache"
    assert sum(r[0] == "build" for r in record) == 3  # denoiser, text_encoder, idm
    assert report["components"]["denoiser"]["source"] == ("denoiser" if has_fp16_flag else "denoiser_fp16")
    assert "denoiser_fp16" not in report["components"]
    den = report["components"]["denoiser"]["profiles"]
    assert den["latents"][0][2] < den["latents"][1][2] < den["latents"][2][2]  # context length range
    assert (("set_flag", 0) in record) == has_fp16_flag
    backend = TrtPlannerBackend(tmp_path / "trt", device="cpu")
    pipe = ckpt["pipe"]
    inp = _inputs(pipe.v4s_config, seed=8)
    ref = pipe(**inp, prompt="go to the chair", generator=torch.Generator().manual_seed(4))
    out = backend(**inp, prompt="go to the chair", generator=torch.Generator().manual_seed(4))
    err = (ref.latents - out.latents).abs().max().item()
    assert err < (1e-3 if has_fp16_flag else 0.1)  # float32 graph vs the fp16 one (TensorRT 11)
    assert out.frames.shape == ref.frames.shape
    assert any(r[0] == "execute" for r in record)


def test_x_prediction_exports_and_plans_at_parity(tmp_path: Path) -> None:
    """``prediction_type="sample"``: the x -> velocity conversion is inside the exported denoiser, so the
    ONNX Runtime loop is unchanged and its plan equals the PyTorch plan; with stochastic sampling too (the
    runtime draws each step's fresh noise from the same generator, in the same order)."""
    from v4s_agent.export.graphs import export_planner

    from v4s_agent.agent.inverse_dynamics import IDMConfig, InverseDynamicsModel
    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline

    pipe = Video4SpatialPipeline.from_config_name(
        "tiny", seed=2, prediction_type="sample", stochastic_sampling=True
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "pipeline")
    InverseDynamicsModel(IDMConfig(height=16, width=16, base_channels=4, num_stages=2)).save_pretrained(
        tmp_path / "idm"
    )
    export_planner(checkpoint=tmp_path, out_dir=tmp_path / "onnx")
    parity = json.loads((tmp_path / "onnx" / "parity.json").read_text())
    assert parity["denoiser"]["ok"] and parity["denoiser"]["max_abs_err"] < 1e-3, parity["denoiser"]
    inp = _inputs(pipe.v4s_config, seed=3)
    inp.pop("camera")
    ref = pipe(**inp, prompt="go to the bed", generator=torch.Generator().manual_seed(5))
    out = OrtPlannerBackend(tmp_path / "onnx", intra_op_threads=1)(
        **inp, prompt="go to the bed", generator=torch.Generator().manual_seed(5)
    )
    assert np.abs(ref.latents.numpy() - out.latents).max() < 1e-3
    assert np.abs(ref.frames.astype(int) - out.frames.astype(int)).max() <= TOL_FRAMES
    again = pipe(**inp, prompt="go to the bed", generator=torch.Generator().manual_seed(5))
    other = pipe(**inp, prompt="go to the bed", generator=torch.Generator().manual_seed(6))
    assert torch.equal(again.latents, ref.latents)  # the scheduler's noise comes from the generator
    assert not torch.equal(other.latents, ref.latents)


def test_context_pose_exports_and_plans_at_parity(tmp_path: Path) -> None:
    """``context_pose``: the context frames' relative poses enter the same ``camera`` input of the exported
    denoiser; the ONNX Runtime plan equals the PyTorch plan with joint CFG (the null branch's noise context
    carries no poses) and with a dropped context, and the poses change the plan."""
    from v4s_agent.export.graphs import export_planner

    from v4s_agent.agent.inverse_dynamics import IDMConfig, InverseDynamicsModel
    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline

    pipe = Video4SpatialPipeline.from_config_name("tiny", seed=2, context_pose=True)
    pipe.set_progress_bar_config(disable=True)
    w = pipe.transformer.camera_embedder.linear_2.weight  # starts as a no-op: make the poses act
    w.data = torch.randn(w.shape, generator=torch.Generator().manual_seed(1)) * 0.5
    pipe.save_pretrained(tmp_path / "pipeline")
    InverseDynamicsModel(IDMConfig(height=16, width=16, base_channels=4, num_stages=2)).save_pretrained(
        tmp_path / "idm"
    )
    export_planner(checkpoint=tmp_path, out_dir=tmp_path / "onnx")
    ort = OrtPlannerBackend(tmp_path / "onnx", intra_op_threads=1)
    inp = _inputs(pipe.v4s_config, seed=3)
    k = pipe.v4s_config.num_context_frames
    cc = np.random.default_rng(4).normal(size=(k, 12)).astype(np.float32)
    lat = {}
    cases = (("cfg", {"guidance_scale": 2.0}), ("drop", {"guidance_scale": 1.0, "drop_context": True}))
    for name, kw in cases:
        ref = pipe(**inp, **kw, context_camera=cc, prompt="go", generator=torch.Generator().manual_seed(5))
        out = ort(**inp, **kw, context_camera=cc, prompt="go", generator=torch.Generator().manual_seed(5))
        assert np.abs(ref.latents.numpy() - out.latents).max() < 1e-3, name
        lat[name] = ref.latents
    no_pose = pipe(**inp, guidance_scale=2.0, prompt="go", generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(no_pose.latents, lat["cfg"])
