"""Memory: what a llama-server launch will hold per device, and where it should go.

* :mod:`corral.fit.ggml_types` -- bytes per block of every ggml type.
* :mod:`corral.fit.estimate` -- ``load_model`` (GGUF header -> :class:`ModelShape`) and the
  pure ``project(model, options, gpus)`` -> bytes per device (weights, KV cache, compute,
  output), following llama.cpp's own allocation (see that module's docstring).
* :mod:`corral.fit.breakdown` -- parse what ``llama-server -lv 4`` prints about its
  buffers and its memory breakdown: the ground truth the estimate is tested against.
* :mod:`corral.fit.planner`, :mod:`corral.fit.devices` -- free memory -> flags that fit.

Nothing here imports more than the standard library and corral's GGUF reader, so the
CLI can use it without paying for FastAPI.
"""
