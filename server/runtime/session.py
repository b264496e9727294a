"""ONNX Runtime session with explicit providers and a fail-fast device check.

CPU: the CPU execution provider with the int8 (or fp32) file. CUDA: the CUDA execution provider
with the fp16 file and I/O binding, so inputs go to the device once and the output comes back once.
If CUDA was asked for and did not attach (``session.get_providers()`` lacks it), we raise at load
instead of silently running on the CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from twostage.server.errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")


def default_threads() -> int:
    """Intra-op threads: the CPUs this process may use (cgroup/affinity aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cuda_available() -> bool:
    """True when this onnxruntime build has the CUDA execution provider."""
    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxSession:
    """One ONNX model on one device; ``run(feeds)`` returns the first output as float32."""

    def __init__(
        self,
        path: Path | str,
        *,
        device: str = "cpu",
        device_id: int = 0,
        intra_op_threads: int | None = None,
        output_name: str | None = None,
    ) -> None:
        if device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {device!r}", field="device")
        self.path = Path(path)
        self.device = device
        self.device_id = device_id
        options = ort.SessionOptions()
        # The graph was optimized at export time; basic (constant folding etc.) is cheap and safe.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.intra_op_num_threads = intra_op_threads or default_threads()
        options.inter_op_num_threads = 1
        if device == "cpu":
            # ORT's pool threads spin after each run by default, holding a core the other work
            # of a request needs (the lexical channel, tokenization, SQLite). Measured on 2
            # cores: hybrid Search p50 13.6 -> 9.3 ms, dense unchanged, embedding throughput
            # unchanged; a lone query embeds ~0.5 ms slower.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        if device == "cuda":
            if not cuda_available():
                raise ConfigError(
                    "device cuda was asked for but this onnxruntime has no CUDAExecutionProvider "
                    f"(available: {', '.join(ort.get_available_providers())}); install the [gpu] "
                    "extra (onnxruntime-gpu) and check the CUDA/cuDNN libraries",
                    field="device",
                )
            providers: list[str | tuple[str, dict[str, object]]] = [
                ("CUDAExecutionProvider", {"device_id": device_id}),
                "CPUExecutionProvider",
            ]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ConfigError(f"cannot load ONNX model {self.path.name}: {exc}") from None
        active = self._session.get_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in active:
            raise ConfigError(
                f"device cuda was asked for but the session runs on {active}: CUDA did not attach "
                "(driver, CUDA or cuDNN libraries missing?)",
                field="device",
            )
        self.providers: list[str] = list(active)
        self.input_names: tuple[str, ...] = tuple(i.name for i in self._session.get_inputs())
        outputs = [o.name for o in self._session.get_outputs()]
        self.output_name = output_name if output_name in outputs else outputs[0]
        log.info("loaded %s on %s (inputs %s)", self.path.name, active[0], self.input_names)

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run one batch; ``feeds`` holds int64 arrays for every graph input."""
        if self.device == "cuda":
            return self._run_bound(feeds)
        (out,) = self._session.run([self.output_name], dict(feeds))
        return np.asarray(out, dtype=np.float32)

    def _run_bound(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        # I/O binding: each input is copied to the device once, the output stays on the device
        # until the single copy back; no intermediate host buffers.
        binding = self._session.io_binding()
        for name in self.input_names:
            value = ort.OrtValue.ortvalue_from_numpy(
                np.ascontiguousarray(feeds[name]), "cuda", self.device_id
            )
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(self.output_name, "cuda", self.device_id)
        self._session.run_with_iobinding(binding)
        (out,) = binding.copy_outputs_to_cpu()
        return np.asarray(out, dtype=np.float32)
