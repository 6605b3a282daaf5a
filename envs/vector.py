"""Vector envs of ``V4SNav-v0``: the ``make_vec`` entry point and GL fork safety.

Why this module: Mesa's llvmpipe keeps its rasteriser threads in the EGL *screen*, which a forked child
inherits without the threads; the child's first draw then waits forever for them. Without them (the
environment variable ``LP_NUM_THREADS=0``, which this module sets as a default before any context
exists), the whole GL state is plain process memory that a fork copies, and the child can keep drawing
with its copy of the parent's context. So:

* importing ``v4s_agent.envs`` sets ``LP_NUM_THREADS=0`` unless the user set it (one rasteriser thread
  per process: at 128x128 a frame is four 64x64 tiles, and vector envs parallelise across processes);
* an ``os.register_at_fork`` hook hands a forked child its copy of the parent's context when that is
  safe (llvmpipe and no ``llvmpipe-N`` thread alive in the parent), so ``gymnasium.vector.AsyncVectorEnv``
  with the default ``fork`` context and ``gym.make_vec(..., vectorization_mode="async")`` work after the
  parent has rendered. Otherwise (NVIDIA EGL, or a user-set ``LP_NUM_THREADS``) a child gets the
  renderer's clear RuntimeError, which names the fix: ``context="forkserver"``;
* ``make_vector_env`` is the id's ``vector_entry_point``: ``gym.make_vec("V4SNav-v0", num_envs=N)``
  builds an ``AsyncVectorEnv`` whose workers start from a ``forkserver`` (a fresh interpreter), which
  works on every EGL driver.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

#: set at import when the user has not chosen: fork-safe single-threaded llvmpipe (see module docstring)
LP_THREADS_DEFAULT = "0"


def _renderer_module():
    """``renderer_gl`` if imported (fork hooks must not import), else None."""
    return sys.modules.get(__package__ + ".renderer_gl")


def prefer_fork_safe_llvmpipe() -> bool:
    """Default ``LP_NUM_THREADS=0`` (llvmpipe draws in the calling thread) before this process creates its
    first GL context; returns whether the default was applied. A value the user set is kept."""
    if "LP_NUM_THREADS" in os.environ:
        return False
    rgl = _renderer_module()
    if rgl is not None and rgl._CTX:
        return False  # too late: the screen exists with its threads; forks will get the clear error
    os.environ["LP_NUM_THREADS"] = LP_THREADS_DEFAULT
    return True


def _llvmpipe_threads_alive() -> bool:
    """Whether llvmpipe rasteriser threads (named ``llvmpipe-N``) run in this process (True if unknown)."""
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("llvmpipe"):
                    return True
    except OSError:
        return True
    return False


_SOFTWARE: dict[int, bool] = {}  # id(context) -> drawn by Mesa's software rasteriser (llvmpipe/softpipe)


def note_gl_context(ctx) -> None:
    """Record which GL implementation ``ctx`` is (a GL query, so called where the context is used, not in
    the fork hook); only contexts noted as llvmpipe/softpipe are handed to forked children."""
    if id(ctx) not in _SOFTWARE:
        try:
            name = str(ctx.info["GL_RENDERER"]).lower()
        except Exception:  # noqa: BLE001 - unknown: never hand it to a child
            name = ""
        _SOFTWARE[id(ctx)] = "llvmpipe" in name or "softpipe" in name


_fork_ctx: list = []  # [renderer_gl, the context to hand to the child] during a fork (set in the parent)


def _before_fork() -> None:
    _fork_ctx.clear()
    rgl = _renderer_module()
    if rgl is None:
        return
    rgl._LOCK.acquire()  # no context is half-made across the fork; released in both after-hooks
    _fork_ctx.append(rgl)
    ctx = rgl._CTX.get(os.getpid())
    safe = ctx is not None and len(rgl._CTX) == 1 and _SOFTWARE.get(id(ctx), False)
    if safe and not _llvmpipe_threads_alive():
        _fork_ctx.append(ctx)


def _after_fork_in_child() -> None:
    if not _fork_ctx:
        return
    rgl = _fork_ctx[0]
    if len(_fork_ctx) == 2:
        rgl._CTX.clear()
        rgl._CTX[os.getpid()] = _fork_ctx[1]  # the child's own copy of the parent's context
    _fork_ctx.clear()
    rgl._LOCK.release()


def _after_fork_in_parent() -> None:
    if _fork_ctx:
        rgl = _fork_ctx[0]
        _fork_ctx.clear()
        rgl._LOCK.release()


_HOOKED = False


def install_fork_hooks() -> None:
    """Register the at-fork hooks once per process (idempotent)."""
    global _HOOKED
    if _HOOKED or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(
        before=_before_fork, after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent
    )
    _HOOKED = True


# --------------------------------------------------------------------------------------- make_vec
# The id the package root registers with make_vector_env as its vector entry point (``v4s_agent.ENV_ID``;
# tests/test_layout.py keeps the two equal). A fresh worker that unpickles ``_make_one`` imports this
# module, hence the package root first, which registers the id: envs never import the root.
ENV_ID = "V4SNav-v0"


def _make_one(env_kwargs: dict[str, Any], max_episode_steps: int | None):
    import gymnasium as gym

    kw = dict(env_kwargs)
    if max_episode_steps is not None:
        kw["max_episode_steps"] = max_episode_steps
    return gym.make(ENV_ID, **kw)


def make_vector_env(
    num_envs: int = 1,
    *,
    context: str | None = "forkserver",
    shared_memory: bool = True,
    copy: bool = True,
    autoreset_mode: Any = None,
    max_episode_steps: int | None = None,
    **env_kwargs: Any,
):
    """``vector_entry_point`` of ``V4SNav-v0``: an ``AsyncVectorEnv`` of ``num_envs`` workers.

    ``gym.make_vec("V4SNav-v0", num_envs=4, split="train")`` lands here (``vectorization_mode`` None or
    ``"vector_entry_point"``); env keyword arguments go to every worker's ``gym.make``. ``context`` is the
    multiprocessing start method (default ``"forkserver"``: workers start from a fresh interpreter, so
    they render on any EGL driver whatever the parent has drawn); ``shared_memory``, ``copy`` and
    ``autoreset_mode`` are ``AsyncVectorEnv``'s.
    """
    import gymnasium as gym

    if int(num_envs) < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    fns = [functools.partial(_make_one, env_kwargs, max_episode_steps) for _ in range(int(num_envs))]
    kw: dict[str, Any] = {"shared_memory": shared_memory, "copy": copy, "context": context}
    if autoreset_mode is not None:
        kw["autoreset_mode"] = autoreset_mode
    return gym.vector.AsyncVectorEnv(fns, **kw)


__all__ = ["install_fork_hooks", "make_vector_env", "note_gl_context", "prefer_fork_safe_llvmpipe"]
