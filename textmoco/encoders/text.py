"""Text encoder adapter: a Hugging Face ``AutoModel`` + tokenizer with masked-mean or CLS pooling.

Views (SimCSE-style): ``collate`` (:class:`TextCollator`, text_collator.py) tokenizes each sentence once and
``make_views`` returns the same tokens twice, so the two forward passes differ only by dropout (the encoder must be
in train mode); with ``token_augment`` the collator returns two independently augmented tokenizations, drawn per
sample from (seed, epoch, sample id, view) so that a resumed run draws what the uninterrupted one drew.

Export: :meth:`TextEncoder.export` writes a sentence-transformers directory (Transformer + Pooling, **no
Normalize**: cosine similarity does not need it and the raw pooled vector stays available; call
``model.encode(..., normalize_embeddings=True)`` for unit vectors). ``SentenceTransformer(dir).encode(x)`` equals
this adapter's eval-mode ``forward`` on the same text.

Shapes: B = batch, T = tokens (padded to the longest in the batch, at most ``max_length``; ``eval_max_length``
in ``encode``/``export``), D = hidden size.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .base import EncoderAdapter
from .text_collator import MODEL_INPUTS, TOKEN_AUGMENTS, TextCollator

POOLING_MODES = ("mean", "cls")


def _load_error(name: str, err: Exception) -> ValueError:
    cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if Path(name).is_dir():
        return ValueError(f"directory {name!r} is not a loadable Hugging Face model ({cause}); it must hold "
                          "config.json, the weights and the tokenizer files (model.save_pretrained + "
                          "tokenizer.save_pretrained)")
    return ValueError(f"model {name!r} not found locally and the Hub is unreachable; pass a local directory or "
                      f"connect (also check the id is spelled right). Cause: {cause}")


class TextEncoder(EncoderAdapter):
    """Sentence encoder for MoCo training: ``forward(view) -> (B, D)`` pooled, un-normalised embeddings.

    Args:
        model_name_or_path: Hub id or local directory loadable by ``AutoModel``/``AutoTokenizer`` (omit when
            passing ``model`` and ``tokenizer``).
        pooling: ``"mean"`` (masked mean of the last hidden states, default) or ``"cls"`` (first token).
        max_length: truncation length in tokens for training (default 32, enough for STS-style sentences).
        eval_max_length: truncation length for :meth:`encode` and :meth:`export` (default: ``max_length``). Set it
            to the base model's length (256 for all-MiniLM-L6-v2) to evaluate/export like the original model:
            STS-B test truncated at 32 tokens scores 81.80 instead of 82.03 for the untouched MiniLM.
        token_augment: ``None`` (dropout-only views, default), ``"repeat"`` or ``"delete"``.
        augment_rate: per-word probability for ``token_augment`` (default 0.1), in [0, 1).
        trust_remote_code: passed to ``from_pretrained`` only when True (default False).
        model, tokenizer: an already-built HF model and tokenizer (used by :meth:`from_sentence_transformer`).
        model_kwargs: extra keyword arguments for ``AutoModel.from_pretrained`` (e.g. ``torch_dtype``).
    """

    def __init__(self, model_name_or_path: Optional[str | os.PathLike] = None, *, pooling: Optional[str] = None,
                 max_length: int = 32, eval_max_length: Optional[int] = None, token_augment: Optional[str] = None,
                 augment_rate: float = 0.1, trust_remote_code: bool = False, model: Optional[nn.Module] = None,
                 tokenizer: Any = None, model_kwargs: Optional[dict[str, Any]] = None):
        super().__init__()
        if pooling is None:  # the source sentence-transformers model's own pooling (CLS stays CLS), else mean
            pooling = _st_pooling_mode(model_name_or_path) or "mean"
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling={pooling!r} is not supported; use one of {POOLING_MODES}")
        if token_augment not in TOKEN_AUGMENTS:
            raise ValueError(f"token_augment={token_augment!r} is not supported; use one of {TOKEN_AUGMENTS}")
        if not 0.0 <= augment_rate < 1.0:
            raise ValueError(f"augment_rate={augment_rate} must be in [0, 1)")
        eval_max_length = max_length if eval_max_length is None else eval_max_length
        for arg, value in (("max_length", max_length), ("eval_max_length", eval_max_length)):
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"{arg}={value!r} must be an int >= 2 (room for the special tokens)")
        self.trust_remote_code = bool(trust_remote_code)
        remote = {"trust_remote_code": True} if trust_remote_code else {}
        if model is None or tokenizer is None:
            if model_name_or_path is None:
                raise ValueError("pass model_name_or_path (a Hub id or local directory), or both model= and "
                                 "tokenizer=")
            from transformers import AutoModel, AutoTokenizer

            name = str(model_name_or_path)
            try:
                tokenizer = AutoTokenizer.from_pretrained(name, **remote) if tokenizer is None else tokenizer
                model = AutoModel.from_pretrained(name, **remote, **(model_kwargs or {})) if model is None else model
            except (OSError, EnvironmentError) as e:
                raise _load_error(name, e) from e
        self.model = model
        self.tokenizer = tokenizer
        self.base_model = str(model_name_or_path) if model_name_or_path is not None else \
            getattr(model.config, "_name_or_path", None)
        # a sentence-transformers source (directory or object): export starts from its own modules
        self.st_source: Any = str(model_name_or_path) if _st_pooling_mode(model_name_or_path) else None
        max_pos = getattr(model.config, "max_position_embeddings", None)
        for arg, value in (("max_length", max_length), ("eval_max_length", eval_max_length)):
            if isinstance(max_pos, int) and max_pos > 0 and value > max_pos:
                raise ValueError(f"{arg}={value} exceeds the model's max_position_embeddings={max_pos}; "
                                 f"pass {arg} <= {max_pos}")
        self.pooling = pooling
        self.max_length = max_length
        self.eval_max_length = eval_max_length
        self.embedding_dim = int(model.config.hidden_size)
        self.collator = TextCollator(tokenizer, max_length, token_augment, augment_rate)
        self.train()  # dropout on: the two views of a sentence differ through it

    @property
    def token_augment(self) -> Optional[str]:
        return self.collator.token_augment

    @classmethod
    def from_sentence_transformer(cls, st_model_or_path: Any, *, max_length: Optional[int] = None,
                                  eval_max_length: Optional[int] = None,
                                  token_augment: Optional[str] = None, augment_rate: float = 0.1,
                                  trust_remote_code: bool = False) -> "TextEncoder":
        """Reuse a SentenceTransformer's (or its directory's) transformer, tokenizer and pooling mode.

        The modules are shared, not copied (training this adapter trains the given ST object). ``max_length=None``
        (and ``eval_max_length=None``) keep the model's ``max_seq_length``. A trailing ``Normalize`` is dropped (the
        core normalises); other modules (e.g. ``Dense``) are rejected because exporting without them would change the
        embeddings.
        """
        if isinstance(st_model_or_path, (str, os.PathLike)):
            from sentence_transformers import SentenceTransformer

            name = str(st_model_or_path)
            try:
                st_model = SentenceTransformer(name, device="cpu", trust_remote_code=trust_remote_code)
            except (OSError, EnvironmentError) as e:
                raise _load_error(name, e) from e
        else:
            st_model, name = st_model_or_path, None
        modules = list(st_model)
        first = modules[0] if modules else None
        hf_model = getattr(first, "auto_model", None) or getattr(first, "model", None)
        tokenizer = getattr(first, "tokenizer", None)
        if hf_model is None or tokenizer is None:
            raise ValueError(f"the first module of the SentenceTransformer is {type(first).__name__}, not a "
                             "Transformer with a tokenizer; TextEncoder needs a transformer-based model")
        pooling_mode = None
        for module in modules[1:]:
            kind = type(module).__name__
            if kind == "Pooling":
                mode = getattr(module, "pooling_mode", None)
                if mode is None and hasattr(module, "get_pooling_mode_str"):  # sentence-transformers < 6
                    mode = module.get_pooling_mode_str()
                mode = mode[0] if isinstance(mode, (list, tuple)) and len(mode) == 1 else mode
                if mode not in POOLING_MODES:
                    raise ValueError(f"the model's pooling mode {mode!r} is not supported; TextEncoder supports "
                                     f"{POOLING_MODES}")
                pooling_mode = mode
            elif kind != "Normalize":
                raise ValueError(f"the SentenceTransformer has a {kind} module; TextEncoder supports only "
                                 "Transformer + Pooling (+ Normalize). Build TextEncoder from the base model instead")
        if pooling_mode is None:
            raise ValueError("the SentenceTransformer has no Pooling module; TextEncoder needs mean or cls pooling")
        st_length = int(getattr(st_model, "max_seq_length", None) or 512)
        enc = cls(model=hf_model, tokenizer=tokenizer, pooling=pooling_mode, max_length=max_length or st_length,
                  eval_max_length=eval_max_length or st_length,
                  token_augment=token_augment, augment_rate=augment_rate, trust_remote_code=trust_remote_code)
        enc.base_model = name or getattr(hf_model.config, "_name_or_path", None)
        enc.st_source = st_model
        return enc

    # ---- EncoderAdapter contract -------------------------------------------------------------------------------
    def collate(self, samples: Sequence[str], sample_keys: Optional[Sequence[Sequence[int]]] = None) -> Any:
        """list of B str -> token dict (or a pair of them with ``token_augment``); see :class:`TextCollator`.
        ``sample_keys`` ((seed, epoch, sample id) per sample, passed by the trainer) seed the word augmentation."""
        return self.collator(samples, sample_keys)

    def make_views(self, inputs: Any) -> tuple[Any, Any]:
        """Two views: the augmented pair from ``collate``, or the same tokens twice (dropout makes the noise)."""
        if isinstance(inputs, (tuple, list)):
            if len(inputs) not in (2, 3):
                raise ValueError(f"expected one token dict or a pair (+ negatives) of them, got a sequence of "
                                 f"{len(inputs)}")
            return inputs[0], inputs[1]
        return inputs, inputs

    def explicit_negatives(self, inputs: Any) -> Optional[dict[str, torch.Tensor]]:
        """The tokens of the explicit negatives (pairs with a ``negative`` column; (B*M, T)) or None."""
        return inputs[2] if isinstance(inputs, (tuple, list)) and len(inputs) == 3 else None

    def forward(self, view: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token dict (B, T) -> pooled embedding (B, D), un-normalised."""
        inputs = {k: view[k] for k in MODEL_INPUTS if k in view}
        out = self.model(**inputs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # (B, T, D)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    @torch.no_grad()
    def encode(self, sentences: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Eval-mode embeddings (N, D), float32 on CPU, in input order (batches are length-sorted for speed),
        truncated at ``eval_max_length``. The module's train/eval mode is restored afterwards."""
        sentences = list(sentences)
        if not sentences:
            return torch.empty(0, self.embedding_dim)
        was_training = self.training
        self.eval()
        device = next(self.model.parameters()).device
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        out = torch.empty(len(sentences), self.embedding_dim)
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self.collator.tokenize([sentences[i] for i in idx], max_length=self.eval_max_length)
                emb = self.forward({k: v.to(device) for k, v in batch.items()})
                out[torch.tensor(idx)] = emb.float().cpu()
        finally:
            self.train(was_training)
        return out

    def export(self, output_dir: str | os.PathLike, **info: Any) -> str:
        """Write a sentence-transformers directory to ``output_dir``; returns its path.

        When the encoder was built from a sentence-transformers model (a directory with ``modules.json``, or
        :meth:`from_sentence_transformer`), the export is that model with only the transformer's weights replaced:
        its Pooling, Normalize, prompts and similarity function are kept, so it is a drop-in replacement (an
        export after 0 steps encodes exactly like the source). ``max_seq_length`` is ``eval_max_length``; a
        ``pooling`` other than the source's replaces its Pooling module. Any other source gets Transformer +
        Pooling (no Normalize; cosine similarity). Loading needs sentence-transformers >= 6.

        ``info`` (JSON-serialisable values or dataclasses: metrics, configs) is saved next to it as
        ``textmoco_info.json``. Write the README with :func:`textmoco.export.write_model_card`.
        """
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

        output_dir = str(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        remote = {"trust_remote_code": True} if self.trust_remote_code else {}
        st_model = self._from_st_source()
        if st_model is not None:  # the source's own modules (Pooling, Normalize, prompts, similarity), our weights
            st_model.save(output_dir, create_model_card=False)
        else:
            self._export_plain(output_dir, remote, Pooling, Transformer, SentenceTransformer)
        if info:
            from ..export import save_json

            info = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
                    for k, v in info.items()}
            save_json(os.path.join(output_dir, "textmoco_info.json"), info)
        return output_dir

    def _from_st_source(self) -> Any:
        """The source SentenceTransformer (Transformer + Pooling [+ Normalize]) with this encoder's weights, or None
        when there is no such source."""
        import copy

        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling

        source = self.st_source
        if source is None:
            return None
        if isinstance(source, (str, os.PathLike)):
            source = SentenceTransformer(str(source), device="cpu", trust_remote_code=self.trust_remote_code)
        else:
            source = copy.deepcopy(source).to("cpu")
        modules = list(source)
        kinds = [type(m).__name__ for m in modules]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return None
        transformer = modules[0]
        hf = getattr(transformer, "auto_model", None) or transformer.model
        hf.load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        if modules[1].pooling_mode != self.pooling:
            source._modules[list(source._modules)[1]] = Pooling(self.embedding_dim, pooling_mode=self.pooling)
        source.max_seq_length = self.eval_max_length
        return source

    def _export_plain(self, output_dir: str, remote: dict, Pooling: Any, Transformer: Any,  # noqa: N803
                      SentenceTransformer: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="textmoco-export-") as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            transformer = Transformer(tmp, max_seq_length=self.eval_max_length, model_kwargs=dict(remote),
                                      processor_kwargs=dict(remote), config_kwargs=dict(remote))
            pooling = Pooling(self.embedding_dim, pooling_mode=self.pooling)
            st_model = SentenceTransformer(modules=[transformer, pooling], device="cpu", similarity_fn_name="cosine")
            st_model.save(output_dir, create_model_card=False)


def _st_pooling_mode(name_or_path: Any) -> Optional[str]:
    """The pooling mode (``"mean"`` / ``"cls"`` / other) of a local sentence-transformers directory, else None."""
    import json

    if name_or_path is None or not isinstance(name_or_path, (str, os.PathLike)):
        return None
    root = Path(name_or_path)
    try:
        modules = json.loads((root / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            try:
                config = json.loads((root / module.get("path", "") / "config.json").read_text())
            except (OSError, ValueError):
                return None
            if config.get("pooling_mode"):  # sentence-transformers >= 6
                mode = config["pooling_mode"]
                return mode[0] if isinstance(mode, list) and len(mode) == 1 else mode
            flags = [k[len("pooling_mode_"):].replace("_tokens", "").replace("_token", "")
                     for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
            return flags[0] if len(flags) == 1 else None
    return None
