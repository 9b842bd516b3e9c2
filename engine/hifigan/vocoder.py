"""Inference wrapper: mel [F, n_mels] float32 → waveform float32 [F * hop], batched and streaming.

Weights are loaded strictly in weight-norm form and folded; everything runs under ``torch.inference_mode``.
``threads`` sets torch's intra-op thread count (process-wide, as torch has no per-module setting).
``backend`` picks how causal chunks run: ``"torch"`` (the generator's PyTorch modules, the reference),
``"onednn"`` (:mod:`.onednn`: prepacked weights, channels-last activations, fused post-ops; equal to float
rounding, faster) or ``"auto"`` (the default: oneDNN when the torch build has it, for causal KAN-TTS models).
Both fold each stage's two upsampling branches into one convolution (:meth:`Generator.fuse_upsampling`).
``precision="bf16"`` (opt-in) computes the residual-block convolutions of the upsampling stages in
:data:`BF16_STAGES` in bf16: inputs, weights and outputs rounded to bf16, float32 accumulation and bias (the
oneDNN backend runs bf16 kernels where the CPU has bf16 instructions, :func:`~.layers.bf16_hardware`, and
float32 elsewhere, with a warning; the torch backend rounds explicitly). Every other layer, the residual sums
and the streaming state stay float32. Which stages is decided by the
real-weights quality gate (``make quality-gate``, benchmarks/quality_gate.py): stages 0-1 pass, adding stage 2
fails, and so does bf16 in the upsamplers or the first and last convolutions. Both backends run it. The
default is float32.

Causal models run in fixed-size chunks (``chunk_frames``) that carry every layer's left context, the rest of
a mel in pieces of at most 64 frames, with the last piece zero-padded on the right to one of a few sizes
(exact: a causal output never sees later input). Every call then uses the same few tensor shapes, so oneDNN
reuses its compiled convolution primitives; whole-utterance calls of ever-new lengths paid 15-30 % extra for
primitive creation on each new length. The default chunk is 256 frames on any thread count
(:data:`DEFAULT_CHUNK_FRAMES`): the audio is bit-identical to shorter pieces, and longer pieces give each
thread more work per fork-join (docs/performance.md, session 10) and, on one thread, read each weight less
often per frame (AMX Xeon, 1 thread, fp32: 1.31 vs 1.46 ms a frame for 64-frame pieces, session 25).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modeldir import VOCODER_PRECISIONS as PRECISIONS
from ..steps import Steps, finish
from .generator import Generator
from .jik876 import Jik876Generator, load_jik876
from .layers import Cache, WNConv1d, bf16_hardware
from .onednn import OnednnStream, frame_bucket
from .onednn import available as onednn_available

log = logging.getLogger("tts.vocoder")

VocoderState = dict[str, np.ndarray]
"""Where a causal utterance left off: every streaming layer's context, keyed by layer path (picklable)."""

DEFAULT_CHUNK_FRAMES = 256
TAIL_FRAMES = 64
"""The longest piece of what a mel has left after its whole chunks (a 129-frame mel is not padded to 256)."""
BF16_STAGES = (0, 1)
"""Upsampling stages whose residual blocks run in bf16 under ``precision="bf16"`` (0 = the first)."""


def _float_tensor(arr: Any) -> Tensor:
    """A float32 tensor over ``arr`` (no copy when it already is a writable contiguous float32 array). Arrays
    deserialised from Ray are read-only, which torch cannot share safely: those are copied (a mel chunk or a
    state is at most a few hundred kB)."""
    out = np.ascontiguousarray(arr, dtype=np.float32)
    return torch.from_numpy(out if out.flags.writeable else out.copy())


def _round_bf16(x: Tensor) -> Tensor:
    return x.to(torch.bfloat16).float()


class _Bf16Conv1d(nn.Module):
    """A folded (non-transposed) :class:`WNConv1d` in bf16: input and weight rounded to bf16, float32
    accumulation and bias, output rounded to bf16. With bf16 instructions (:func:`~.layers.bf16_hardware`)
    it runs the oneDNN bf16 kernel the oneDNN backend runs, so the quality gate (which runs this module on
    the universal HiFi-GAN) judges that arithmetic; elsewhere it rounds explicitly around a float32
    convolution."""

    def __init__(self, conv: WNConv1d) -> None:
        super().__init__()
        if conv.transposed or conv.is_weight_norm:
            raise VocoderError("bf16 applies to folded, non-transposed convolutions only")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.weight = nn.Parameter(_round_bf16(conv.weight.detach()), requires_grad=False)
        self.bias = conv.bias
        self._kernel_weight = None  # [out, in, 1, k] bf16 for oneDNN's kernel, with bf16 instructions only
        if bf16_hardware() and onednn_available():
            self._kernel_weight = conv.weight.detach().to(torch.bfloat16).unsqueeze(2).contiguous()

    def forward(self, x: Tensor, padding: int | None = None) -> Tensor:
        pad = self.padding if padding is None else padding
        if self._kernel_weight is not None:
            y = torch.ops.mkldnn._convolution_pointwise(
                x.to(torch.bfloat16).unsqueeze(2),
                self._kernel_weight,
                self.bias,
                [0, pad],
                [1, self.stride],
                [1, self.dilation],
                1,
                "none",
                [],
                "",
            )
            return y.squeeze(2).float()
        y = F.conv1d(_round_bf16(x), self.weight, self.bias, self.stride, pad, self.dilation)
        return _round_bf16(y)


def _to_bf16_stages(model: Generator | Jik876Generator, stages: Sequence[int]) -> None:
    """Swap every conv of the residual blocks of ``stages`` for its bf16 form (in place)."""
    blocks = model.conv_blocks if isinstance(model, Generator) else model.resblocks
    per_stage = model.num_kernels
    for index, block in enumerate(blocks):
        if index // per_stage not in stages:
            continue
        for name, module in list(block.named_modules()):
            if isinstance(module, WNConv1d):
                parent_name, _, attr = name.rpartition(".")
                parent = block.get_submodule(parent_name) if parent_name else block
                setattr(parent, attr, _Bf16Conv1d(module))


BACKENDS = ("auto", "torch", "onednn")


def _padded(piece: Tensor, size: int) -> Tensor:
    """``piece`` [..., T] zero-padded on the right to ``size`` frames (a causal output never sees them)."""
    return F.pad(piece, (0, size - piece.shape[-1])) if size > piece.shape[-1] else piece


def _bucket(frames: int, chunk: int) -> int:
    """The padded size of a final chunk: its :func:`~.onednn.frame_bucket`, at most ``chunk``."""
    return max(frames, min(frame_bucket(frames), chunk))


class VocoderError(ValueError):
    """Bad vocoder input, config or checkpoint."""


def generator_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The generator weights inside a KAN-TTS checkpoint.

    Accepts ``{'model': {'generator': sd}}``, ``{'generator': sd}`` or a bare state dict.
    """
    state: Any = checkpoint
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if isinstance(state, Mapping) and "generator" in state:
        state = state["generator"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise VocoderError("vocoder checkpoint has no generator state dict (expected ['model']['generator'])")
    return dict(state)


def _load_checkpoint_file(path: Path) -> Any:
    try:  # the model-directory loader's error messages are preferred when available
        from engine.modeldir import load_checkpoint
    except ImportError:
        load_checkpoint = None
    if load_checkpoint is not None:
        return load_checkpoint(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise VocoderError(f"vocoder checkpoint not found: {path}") from e
    except Exception as e:
        raise VocoderError(f"{path}: cannot be loaded with weights_only=True ({e})") from e


class Vocoder:
    """HiFi-GAN vocoder around a folded, eval-mode generator."""

    def __init__(
        self,
        model: Generator | Jik876Generator,
        sample_rate: int,
        threads: int | None = None,
        n_mels: int = 80,
        precision: str = "fp32",
        chunk_frames: int | None = None,
        backend: str = "auto",
    ) -> None:
        if threads is not None and threads < 1:
            raise VocoderError(f"threads must be >= 1, got {threads}")
        if chunk_frames is None:
            chunk_frames = DEFAULT_CHUNK_FRAMES
        if chunk_frames < 0:
            raise VocoderError(f"chunk_frames must be >= 0 (0 = whole utterance), got {chunk_frames}")
        self.chunk_frames = int(chunk_frames)
        if precision not in PRECISIONS:
            raise VocoderError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.precision = precision
        if backend not in BACKENDS:
            raise VocoderError(f"backend must be one of {BACKENDS}, got {backend!r}")
        model.remove_weight_norm()
        if isinstance(model, Generator):
            model.fuse_upsampling()  # in float32, before any bf16 cast
        model.eval().requires_grad_(False)
        self._dtype = torch.float32  # model inputs and streaming state (bf16 stays inside its convolutions)
        self.model = model
        self.backend, self._stream = self._pick_backend(backend)  # oneDNN prepacks from the float32 weights
        if precision == "bf16":
            _to_bf16_stages(model, BF16_STAGES)
            if self.backend == "onednn" and not bf16_hardware():
                log.warning("precision bf16: this CPU has no bf16 instructions; the oneDNN backend runs fp32")
        self.sample_rate = int(sample_rate)
        self.hop_length = int(model.hop_length)
        self.n_mels = int(n_mels)
        self.causal = isinstance(model, Generator) and model.causal
        self.threads = threads
        self._apply_threads()
        if isinstance(self._stream, OnednnStream):  # prepacked for this thread count's chunks
            self._stream.warm(1, self._piece_buckets())

    # ---- construction ----
    @classmethod
    def from_config(
        cls,
        voc_config: dict[str, Any],
        state_dict: Mapping[str, Tensor],
        threads: int | None = None,
        precision: str = "fp32",
        backend: str = "auto",
        chunk_frames: int | None = None,
    ) -> Vocoder:
        """Build from a ``voc/config.yaml`` dict and a weight-norm state dict (loaded strictly)."""
        try:
            model = Generator.from_config(voc_config)
        except ValueError as e:
            raise VocoderError(str(e)) from e
        try:
            model.load_state_dict(generator_state_dict(state_dict), strict=True)
        except RuntimeError as e:
            raise VocoderError(f"vocoder checkpoint does not match voc/config.yaml: {e}") from e
        audio = voc_config.get("audio_config") or {}
        sample_rate = int(audio.get("sampling_rate", 16000))
        return cls(model, sample_rate, threads, model.in_channels, precision, chunk_frames, backend)

    @classmethod
    def from_voice(
        cls,
        voice: Any,
        threads: int | None = None,
        precision: str = "fp32",
        backend: str = "auto",
        chunk_frames: int | None = None,
    ) -> Vocoder:
        """Build from an ``engine.modeldir.VoiceSpec`` (``voc_config`` dict, ``voc_checkpoint`` path)."""
        path = Path(voice.voc_checkpoint)
        try:
            state = _load_checkpoint_file(path)
            return cls.from_config(voice.voc_config, state, threads, precision, backend, chunk_frames)
        except VocoderError as e:
            raise VocoderError(f"voice {getattr(voice, 'name', '?')!r}, {path}: {e}") from e

    @classmethod
    def from_jik876(
        cls,
        checkpoint: str | Path,
        config_json: str | Path,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> Vocoder:
        """Load a jik876-format generator (e.g. the universal HiFi-GAN V1) and its ``config.json``."""
        try:
            model, config = load_jik876(checkpoint, config_json)
        except (ValueError, FileNotFoundError) as e:
            raise VocoderError(str(e)) from e
        return cls(
            model, int(config["sampling_rate"]), threads, n_mels=int(config["num_mels"]), precision=precision
        )

    def _pick_backend(self, backend: str) -> tuple[str, Any]:
        """The backend name and the causal chunk function ``(mel [B, n_mels, T], cache) -> audio``."""
        model = self.model
        if not isinstance(model, Generator) or not model.causal:
            if backend == "onednn":
                raise VocoderError("the onednn backend runs causal KAN-TTS generators only")
            return "torch", None
        if backend in ("auto", "onednn") and onednn_available():
            bf16_stages = BF16_STAGES if self.precision == "bf16" and bf16_hardware() else ()
            try:
                return "onednn", OnednnStream(model, bf16_stages)
            except ValueError as e:
                if backend == "onednn":
                    raise VocoderError(str(e)) from e
        elif backend == "onednn":
            raise VocoderError("this torch build has no oneDNN convolution ops; use backend='torch'")
        return "torch", model.forward_stream

    # ---- inference ----
    def _apply_threads(self) -> None:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _to_tensor(self, mel: Any, what: str = "mel") -> Tensor:
        arr = np.asarray(mel)
        if arr.ndim != 2 or arr.shape[1] != self.n_mels:
            raise VocoderError(f"{what} must have shape [frames, {self.n_mels}], got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise VocoderError(f"{what} must be floating point, got {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise VocoderError(f"{what} contains NaN or infinite values")
        return _float_tensor(arr).T

    def _run(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return finish(self._run_steps(x, lengths))

    def _run_steps(self, x: Tensor, lengths: Tensor | None = None) -> Steps[Tensor]:
        """Whole mels ``x`` [B, n_mels, T] → audio; causal chunked models pause inside and between pieces,
        other models run in one step."""
        if self.causal and self.chunk_frames:
            return (yield from self._run_chunked_steps(x, {}, final=True))
        x = x.to(self._dtype)
        if lengths is not None and isinstance(self.model, Generator):
            return self.model(x, lengths).float()
        return self.model(x).float()

    def _piece_steps(self, piece: Tensor, cache: Cache) -> Steps[Tensor]:
        """One causal piece; pausable inside when the backend allows (oneDNN: after each residual block)."""
        steps = getattr(self._stream, "steps", None)
        if steps is None:
            return self._stream(piece, cache)
        return (yield from steps(piece, cache))

    def _run_chunked_steps(self, x: Tensor, cache: Cache, final: bool) -> Steps[Tensor]:
        """Causal: ``x`` [B, n_mels, T] → [B, 1, T * hop] in ``chunk_frames`` pieces continuing ``cache``,
        what is left of it after the whole chunks in pieces of at most :data:`TAIL_FRAMES`.

        With ``final`` the last piece is zero-padded to a bucket size (the cache is then spent); otherwise
        every frame is pushed exactly, so ``cache`` continues the utterance. Pausable between and inside
        pieces (:mod:`engine.steps`).
        """
        assert isinstance(self.model, Generator)
        outs: list[Tensor] = []
        pos = 0
        for n, size in self._cuts(x.shape[-1], final):
            piece = _padded(x[..., pos : pos + n].to(self._dtype), size)
            outs.append((yield from self._piece_steps(piece, cache))[..., : n * self.hop_length].float())
            pos += n
        return torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]

    @property
    def tail_frames(self) -> int:
        """The longest piece :meth:`_cuts` makes of what is left after a mel's whole chunks (0: whole
        utterances)."""
        return min(self.chunk_frames, TAIL_FRAMES)

    def _cuts(self, total: int, final: bool) -> list[tuple[int, int]]:
        """How :meth:`_run_chunked_steps` cuts ``total`` frames: (frames, size zero-padded to) per piece."""
        chunk = self.chunk_frames or total
        small = self.tail_frames  # 0 for whole utterances: their one piece is never padded
        cuts: list[tuple[int, int]] = []
        pos = 0
        while pos < total:
            rest = total - pos
            n = chunk if rest >= chunk else min(rest, small)
            cuts.append((n, _bucket(n, small) if final and n < small else n))
            pos += n
        return cuts

    def _piece_buckets(self) -> list[int]:
        """The frame buckets (:func:`~engine.hifigan.onednn.frame_bucket`) of every piece :meth:`_cuts` makes
        (the tails' buckets up to :data:`TAIL_FRAMES`, and the whole chunk)."""
        longest = self.chunk_frames or TAIL_FRAMES
        return sorted({frame_bucket(size) for n in range(1, longest + 1) for _, size in self._cuts(n, True)})

    def _run_group_steps(self, xs: Sequence[Tensor]) -> Steps[list[Tensor]]:
        """Whole causal mels (``[n_mels, T]`` each) → their audio, each cut as :meth:`_run_chunked_steps` cuts
        it alone, with equal-size pieces of different mels run as one batch (each sample's convolutions are
        the same as alone: bit-identical on oneDNN). Fewer, fuller calls: two mels of a request share their
        long pieces, and on 2+ threads a batch splits between the threads by sample."""
        cuts = [self._cuts(x.shape[-1], final=True) for x in xs]
        done, pos = [0] * len(xs), [0] * len(xs)
        caches: list[Cache] = [{} for _ in xs]
        outs: list[list[Tensor]] = [[] for _ in xs]
        while heads := {i: cuts[i][done[i]] for i in range(len(xs)) if done[i] < len(cuts[i])}:
            groups: dict[tuple[int, bool], list[int]] = {}
            for i, (_, size) in heads.items():  # a first piece (no context yet) never joins a later one
                groups.setdefault((size, bool(caches[i])), []).append(i)
            (size, _), members = max(groups.items(), key=lambda g: (len(g[1]), g[0][0]))
            batch = torch.stack([_padded(xs[i][:, pos[i] : pos[i] + heads[i][0]], size) for i in members])
            first = caches[members[0]]
            together = len(members) > 1
            cache = {k: torch.cat([caches[i][k] for i in members]) for k in first} if together else first
            y = yield from self._piece_steps(batch.to(self._dtype), cache)
            for j, i in enumerate(members):
                n = heads[i][0]
                outs[i].append(y[j, 0, : n * self.hop_length].float())
                caches[i] = {k: v[j : j + 1] for k, v in cache.items()} if together else cache
                pos[i] += n
                done[i] += 1
        return [torch.cat(o) if len(o) > 1 else o[0] for o in outs]

    def vocode_continue(
        self, mel: np.ndarray, state: VocoderState | None = None, final: bool = False
    ) -> tuple[np.ndarray, VocoderState | None]:
        """Causal only: the next frames of an utterance → (their audio, the state to continue from).

        ``state`` is what the previous call returned (None for the first chunk). The concatenated audio equals
        :meth:`vocode` of the whole mel to float rounding, whichever process runs each call. ``final`` marks
        the last chunk (its state is not returned).
        """
        return finish(self.vocode_continue_steps(mel, state, final))

    def vocode_continue_steps(
        self, mel: np.ndarray, state: VocoderState | None = None, final: bool = False
    ) -> Steps[tuple[np.ndarray, VocoderState | None]]:
        """:meth:`vocode_continue` as pausable steps (:mod:`engine.steps`)."""
        return (yield from self._continue_steps([mel], [state], final))[0]

    def vocode_continue_batch(
        self, mels: Sequence[np.ndarray], states: Sequence[VocoderState | None], final: bool = False
    ) -> list[tuple[np.ndarray, VocoderState | None]]:
        """:meth:`vocode_continue` for several utterances in one pass.

        All chunks must have the same number of frames, and either all or none carry a state.
        """
        return finish(self._continue_steps(mels, states, final))

    @torch.inference_mode()
    def _continue_steps(
        self, mels: Sequence[np.ndarray], states: Sequence[VocoderState | None], final: bool
    ) -> Steps[list[tuple[np.ndarray, VocoderState | None]]]:
        if not self.causal:
            raise VocoderError("vocode_continue needs a causal vocoder; use windowed streaming")
        if len(mels) != len(states) or not mels:
            raise VocoderError(
                "vocode_continue_batch needs one state (or None) per mel, and at least one mel"
            )
        xs = [self._to_tensor(m, f"mels[{i}]") for i, m in enumerate(mels)]
        frames = {x.shape[1] for x in xs}
        if len(frames) != 1 or 0 in frames:
            raise VocoderError(f"chunks in one batch must have the same, non-zero frame count, got {frames}")
        if len({s is None or not s for s in states}) != 1:
            raise VocoderError("all or none of the chunks in a batch must continue a state")
        self._apply_threads()
        caches = [self._cache_from_state(s) for s in states]
        cache = {k: torch.cat([c[k] for c in caches]) for k in caches[0]} if caches[0] else {}
        y = (yield from self._run_chunked_steps(torch.stack(xs), cache, final))[:, 0]
        out: list[tuple[np.ndarray, VocoderState | None]] = []
        for i in range(len(xs)):
            audio = y[i].numpy().astype(np.float32, copy=True)
            state = None if final else self._state_from_cache({k: v[i : i + 1] for k, v in cache.items()})
            out.append((audio, state))
        return out

    def _cache_from_state(self, state: VocoderState | None) -> Cache:
        if not state:
            return {}
        keys = self.stream_keys()
        if set(state) != keys:
            raise VocoderError("vocoder state does not match this model (different architecture)")
        return {k: _float_tensor(v).to(self._dtype) for k, v in state.items()}

    @staticmethod
    def _state_from_cache(cache: Cache) -> VocoderState:
        return {k: np.ascontiguousarray(v.float().numpy()) for k, v in cache.items()}

    def stream_keys(self) -> set[str]:
        """The layer paths a complete :data:`VocoderState` holds (causal models)."""
        if not hasattr(self, "_stream_keys"):
            cache: Cache = {}
            with torch.inference_mode():
                self.model.forward_stream(torch.zeros(1, self.n_mels, 1, dtype=self._dtype), cache)
            self._stream_keys = set(cache)
        return self._stream_keys

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        """Mel [frames, n_mels] → float32 waveform of ``frames * hop_length`` samples."""
        return finish(self.vocode_steps(mel))

    @torch.inference_mode()
    def vocode_steps(self, mel: np.ndarray) -> Steps[np.ndarray]:
        """:meth:`vocode` as pausable steps (:mod:`engine.steps`)."""
        x = self._to_tensor(mel)
        if x.shape[1] == 0:
            raise VocoderError("mel has 0 frames")
        self._apply_threads()
        y = yield from self._run_steps(x[None])
        return y.reshape(-1).numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def vocode_batch(self, mels: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Vocode several mels at once. Causal chunked models cut each mel as :meth:`vocode` does and run
        equal pieces of different mels as one batch (no padding to the longest); non-causal KAN-TTS models
        run zero-padded to the longest, masked past each item's end; jik876 models one by one.

        Each output equals :meth:`vocode` of that mel to float rounding (causal on oneDNN: bit-identical).
        """
        xs = [self._to_tensor(m, f"mels[{i}]") for i, m in enumerate(mels)]
        for i, x in enumerate(xs):
            if x.shape[1] == 0:
                raise VocoderError(f"mels[{i}] has 0 frames")
        if not xs:
            return []
        self._apply_threads()
        if isinstance(self.model, Jik876Generator) or len(xs) == 1:
            return [self._run(x[None]).reshape(-1).numpy() for x in xs]
        if self.causal and self.chunk_frames:
            return [y.numpy() for y in finish(self._run_group_steps(xs))]
        frames = [x.shape[1] for x in xs]
        batch = torch.zeros(len(xs), self.n_mels, max(frames))
        for i, x in enumerate(xs):
            batch[i, :, : x.shape[1]] = x
        lengths = None if self.causal else torch.tensor(frames)
        y = self._run(batch, lengths)[:, 0]
        return [y[i, : f * self.hop_length].numpy().copy() for i, f in enumerate(frames)]

    def stream(self, context_frames: int | None = None) -> StreamingVocoder:
        """A chunked vocoder whose concatenated output equals :meth:`vocode` of the whole mel.

        Causal models keep every layer's left context (exact, no recomputation). Non-causal models re-run
        ``context_frames`` of overlap on each side (default: the receptive radius, which makes them exact
        too).
        """
        return StreamingVocoder(self, context_frames)


class StreamingVocoder:
    """``push(mel_chunk) -> audio`` as frames arrive, ``flush() -> audio`` at the end of the utterance."""

    def __init__(self, vocoder: Vocoder, context_frames: int | None = None) -> None:
        self.vocoder = vocoder
        self._cache: Cache = {}
        self._closed = False
        model = vocoder.model
        if vocoder.causal:
            self.context_frames = 0
        else:
            radius = model.receptive_radius_frames()
            self.context_frames = radius if context_frames is None else int(context_frames)
            if self.context_frames < 0:
                raise VocoderError(f"context_frames must be >= 0, got {context_frames}")
        self._buffer = torch.zeros(vocoder.n_mels, 0)  # non-causal: kept frames (left context + pending)
        self._buffer_start = 0  # absolute index of _buffer[:, 0]
        self._emitted = 0  # frames whose audio has been returned
        self._received = 0

    @property
    def frames_received(self) -> int:
        return self._received

    @torch.inference_mode()
    def push(self, mel_chunk: np.ndarray) -> np.ndarray:
        """Add frames [n, n_mels]; returns the audio that is now final (possibly empty)."""
        if self._closed:
            raise VocoderError("push() after flush(): start a new stream per utterance")
        x = self.vocoder._to_tensor(mel_chunk, "mel_chunk")
        if x.shape[1] == 0:
            return np.zeros(0, np.float32)
        self.vocoder._apply_threads()
        self._received += x.shape[1]
        if self.vocoder.causal:
            assert isinstance(self.vocoder.model, Generator)
            self._emitted = self._received
            y = self.vocoder._stream(x[None].to(self.vocoder._dtype), self._cache)
            return y.float().reshape(-1).numpy().copy()
        self._buffer = torch.cat((self._buffer, x), dim=1)
        return self._emit(self._received - self.context_frames)

    @torch.inference_mode()
    def flush(self) -> np.ndarray:
        """Return the remaining audio; the stream is closed afterwards."""
        if self._closed:
            return np.zeros(0, np.float32)
        self._closed = True
        if self.vocoder.causal:
            return np.zeros(0, np.float32)
        self.vocoder._apply_threads()
        return self._emit(self._received)

    def _emit(self, end: int) -> np.ndarray:
        """Non-causal: vocode frames [emitted, end) from a window with ``context_frames`` on each side."""
        if end <= self._emitted:
            return np.zeros(0, np.float32)
        hop, c = self.vocoder.hop_length, self.context_frames
        start = max(self._buffer_start, self._emitted - c)
        win_end = min(self._received, end + c)
        window = self._buffer[:, start - self._buffer_start : win_end - self._buffer_start]
        y = self.vocoder._run(window[None]).reshape(-1)
        out = y[(self._emitted - start) * hop : (end - start) * hop].numpy().copy()
        self._emitted = end
        keep_from = max(self._buffer_start, end - c)
        self._buffer = self._buffer[:, keep_from - self._buffer_start :]
        self._buffer_start = keep_from
        return out
