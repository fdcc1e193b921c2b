"""Model input: a Hugging Face ``config.json`` read into a :class:`ModelSpec`.

HF configs carry dozens of training and tokenizer keys, so keys this module does not
use are ignored (unlike autoplan's own formats, which refuse unknown fields). Each
family's architecture keys are read by name, and a missing required key is an
:class:`~autoplan.errors.InputError` naming it.

Families: Llama / Mistral / Qwen2 / Qwen3 (GQA, optional explicit ``head_dim``),
Mixtral and Qwen3-MoE (routed experts, top-k), DeepSeek-V2/V3 (MLA, shared experts,
first dense layers), Falcon (multi-query or grouped KV, parallel attention, plain
GELU MLP), BLOOM and OPT (MHA, plain MLP, biases, LayerNorm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from autoplan.errors import InputError, first_error
from autoplan.inputs.checkpoint import BF16, CheckpointFormat, checkpoint_format, with_sidecar
from autoplan.inputs.context_length import MAX_CONTEXT as _MAX_CONTEXT
from autoplan.inputs.context_length import context_limit
from autoplan.inputs.names import Name, PathName
from autoplan.inputs.reading import config_int, read_json, show_value
from autoplan.inputs.unquantized import check_sixteen_bit, kind_of, with_unquantized


class MLASpec(BaseModel):
    """DeepSeek multi-head latent attention dimensions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    q_lora_rank: int | None  # None: queries projected directly from the hidden state
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


class MoESpec(BaseModel):
    """Routed mixture of experts in the MLP of some layers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_experts: int
    top_k: int
    expert_intermediate_size: int
    num_shared_experts: int = 0
    shared_intermediate_size: int = 0
    # Layer indices that use the MoE MLP; the others use the dense MLP.
    moe_layers: tuple[int, ...]


class ModelSpec(BaseModel):
    """The shape of a decoder-only transformer, as the cost model needs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: PathName
    family: Name
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (dense layers of MoE models included)
    vocab_size: int
    tie_word_embeddings: bool
    gated_mlp: bool  # SwiGLU-style gate+up+down (3 matrices) vs up+down (2)
    parallel_attention: bool = False  # attention and MLP read the same input: one all-reduce
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    linear_bias: bool = False  # biases on every projection (BLOOM, OPT)
    qkv_bias: bool = False  # biases on Q, K, V only (Qwen2)
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)
    learned_positions: int = 0  # rows of a learned position table (OPT)
    embedding_norm: bool = False  # LayerNorm right after the embedding (BLOOM)
    norms_per_layer: int = 2
    mla: MLASpec | None = None
    moe: MoESpec | None = None
    source: str = ""
    published_parameters: float | None = None
    # The longest sequence (prompt + output tokens) the model is configured for
    # (:func:`context_limit`); None where the config states none (ALiBi models).
    max_context: int | None = None
    # The format its weights ship in (quantization_config): the default of --dtype, and
    # whether FP8 weights are block-scaled (autoplan.inputs.checkpoint).
    checkpoint: CheckpointFormat = BF16

    @model_validator(mode="after")
    def _older_plans(self) -> ModelSpec:
        # A spec embedded in a plan written before the checkpoint field: DeepSeek's FP8
        # weights were block-scaled by family then (as the published checkpoints are), so
        # such a plan still validates to its own figures.
        if "checkpoint" not in self.model_fields_set and self.family.startswith("deepseek"):
            return self.model_copy(update={"checkpoint": CheckpointFormat(
                dtype="fp8", fp8_block_scaled=True, quant_method="fp8")})
        return self

    def layer_kind(self, index: int) -> str:
        """``"moe"`` or ``"dense"``, with the projections the checkpoint keeps 16-bit
        (``"dense:o_proj,qkv_proj"``, :func:`~autoplan.inputs.unquantized.kind_of`):
        layers of one kind are identical."""
        base = "moe" if self.moe and index in set(self.moe.moe_layers) else "dense"
        return kind_of(base, self.checkpoint.sixteen_bit_at(index))

    @model_validator(mode="after")
    def _bounded(self) -> ModelSpec:
        # The bounds model_from_config holds a config.json to, for a spec given whole (a
        # plan's embedded model_spec): zero KV heads or top-k above the experts must not
        # reach the cost model.
        if self.family not in _SUPPORTED:
            raise ValueError(f"unsupported family {self.family!r}")
        dims = {k: getattr(self, k) for k in ("hidden_size", "num_attention_heads",
                "num_kv_heads", "head_dim", "intermediate_size", "vocab_size")}
        if self.mla:
            dims.update({f"mla.{k}": v for k, v in self.mla.model_dump().items() if v is not None})
        if self.moe:
            dims.update({"moe.num_experts": self.moe.num_experts, "moe.top_k": self.moe.top_k,
                         "moe.expert_intermediate_size": self.moe.expert_intermediate_size})
        for k, v in {**dims, "num_layers": self.num_layers}.items():
            if not 1 <= v <= (_MAX_LAYERS if k == "num_layers" else _MAX_DIM):
                raise ValueError(f"{k} must be a positive integer of at most "
                                 f"{_MAX_LAYERS if k == 'num_layers' else _MAX_DIM}, got {v}")
        if self.head_dim % 8:
            # vLLM's FlashAttention backend runs head sizes that are multiples of 8
            # (vllm/v1/attention/backends/flash_attn.py, supports_head_size)
            raise ValueError(f"head_dim {self.head_dim} is not a multiple of 8: vLLM's "
                             "FlashAttention backend and the kernel data's attention rows "
                             "have none such")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) is not a "
                             f"multiple of num_kv_heads ({self.num_kv_heads})")
        if not (0 <= self.learned_positions <= _MAX_DIM + 2 and 1 <= self.norms_per_layer <= 2):
            raise ValueError("learned_positions or norms_per_layer is out of range")
        check_sixteen_bit(self.checkpoint.sixteen_bit, self.num_layers)
        if self.max_context is not None and not 1 <= self.max_context <= _MAX_CONTEXT:
            raise ValueError(f"max_context must be in [1, {_MAX_CONTEXT}], got {self.max_context}")
        if self.published_parameters is not None and not 0 < self.published_parameters < 1e16:
            raise ValueError(f"published_parameters must be in (0, 1e16), got "
                             f"{self.published_parameters}")
        moe = self.moe
        if moe is not None and moe.top_k > moe.num_experts:
            raise ValueError(f"moe.top_k {moe.top_k} is above moe.num_experts {moe.num_experts}")
        if moe is not None and not (0 <= moe.num_shared_experts <= 1 << 16
                                    and 0 <= moe.shared_intermediate_size <= _MAX_DIM << 16):
            raise ValueError("moe: shared experts out of range")
        if moe is not None and (len(set(moe.moe_layers)) != len(moe.moe_layers)
                                or not all(0 <= i < self.num_layers for i in moe.moe_layers)):
            raise ValueError("moe.moe_layers must be distinct layers of the model")
        if moe is not None and not moe.moe_layers:
            raise ValueError("moe: no layer is an MoE layer (first_k_dense_replace, "
                             "decoder_sparse_step or mlp_only_layers leave none)")
        return self


def _req(cfg: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present in ``cfg``; an error naming them if none is."""
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    raise InputError(f"model config is missing required key {' / '.join(repr(k) for k in keys)}")


def _opt(cfg: dict[str, Any], key: str, default: Any) -> Any:
    v = cfg.get(key)
    return default if v is None else v


# Upper bounds far above any published model; they keep absurd values (1e30 layers) from
# hanging the per-layer loops or overflowing the cost model's floats.
_MAX_DIM = 1 << 24
_MAX_LAYERS = 1 << 12
MAX_LAYERS = _MAX_LAYERS


def _positive_int(value: Any, key: str, maximum: int = _MAX_DIM) -> int:
    return config_int(value, key, maximum)


def _count(value: Any, key: str, maximum: int = _MAX_DIM) -> int:
    """A non-negative integer (0 allowed)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"model config key {key!r} must be a non-negative integer, got "
                         f"{show_value(value)}")
    return 0 if value == 0 else _positive_int(value, key, maximum)


def _head_dim(cfg: dict[str, Any], h: int, heads: int) -> int:
    """``head_dim`` where the config states it, else ``hidden_size / num_attention_heads``
    (which must then divide: Hugging Face's attention modules refuse a remainder)."""
    if cfg.get("head_dim") is not None:
        return _positive_int(cfg["head_dim"], "head_dim")
    if h % heads:
        raise InputError(f"model config: hidden_size {h} is not a multiple of "
                         f"num_attention_heads {heads} (and no head_dim is given)")
    return h // heads


def _flag(cfg: dict[str, Any], key: str, default: bool) -> bool:
    v = _opt(cfg, key, default)
    if not isinstance(v, bool):
        raise InputError(f"model config key {key!r} must be true or false, got {show_value(v)}")
    return v


def _layer_list(value: Any, key: str) -> list[int]:
    if not isinstance(value, list):
        raise InputError(f"model config key {key!r} must be a list of layer indices")
    return [_count(v, key, _MAX_LAYERS) for v in value]


def _family(cfg: dict[str, Any]) -> str:
    mt = cfg.get("model_type")
    if mt is not None and not isinstance(mt, str):
        raise InputError(f"model config key 'model_type' must be a string, got {show_value(mt)}")
    if not mt:
        archs = cfg.get("architectures")
        if isinstance(archs, list) and archs and isinstance(archs[0], str):
            mt = archs[0].lower().replace("forcausallm", "")
        else:
            raise InputError("model config is missing required key 'model_type'")
    return mt.lower()


_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe"}
_DEEPSEEK = {"deepseek_v3", "deepseek_v2"}
_FALCON = {"falcon", "refinedweb", "refinedwebmodel", "rw"}
_SUPPORTED = sorted(_LLAMA_LIKE | _DEEPSEEK | _FALCON | {"bloom", "opt"})


def model_from_config(cfg: Any, name: str = "") -> ModelSpec:
    """Read a parsed HF ``config.json`` into a :class:`ModelSpec`.

    >>> m = model_from_config({"model_type": "llama", "hidden_size": 64,
    ...     "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    ...     "vocab_size": 100})
    >>> (m.num_kv_heads, m.head_dim, m.gated_mlp)
    (4, 16, True)
    """
    if not isinstance(cfg, dict):
        raise InputError("model config must be a JSON object")
    meta = cfg.get("_autoplan") if isinstance(cfg.get("_autoplan"), dict) else {}
    family = _family(cfg)
    if family in _LLAMA_LIKE:
        fields = _llama_like(cfg, family)
    elif family in _DEEPSEEK:
        fields = _deepseek(cfg)
    elif family in _FALCON:
        fields = _falcon(cfg)
    elif family == "bloom":
        fields = _bloom(cfg)
    elif family == "opt":
        fields = _opt_family(cfg)
    else:
        raise InputError(
            f"unsupported model_type {family!r}; supported: {', '.join(_SUPPORTED)}"
        )
    for key in ("hidden_size", "num_layers", "num_attention_heads", "num_kv_heads",
                "head_dim", "intermediate_size", "vocab_size"):
        _positive_int(fields[key], key, _MAX_LAYERS if key == "num_layers" else _MAX_DIM)
    moe = fields.get("moe")
    if moe is not None and moe.top_k > moe.num_experts:
        raise InputError(f"model config routes each token to {moe.top_k} experts but has "
                         f"only {moe.num_experts}")
    if fields["num_attention_heads"] % fields["num_kv_heads"]:
        raise InputError(
            f"num_attention_heads ({fields['num_attention_heads']}) is not a multiple of "
            f"the number of KV heads ({fields['num_kv_heads']})"
        )
    published = meta.get("published_parameters")
    max_context = context_limit(cfg)
    checkpoint = checkpoint_format(cfg)
    try:
        spec = ModelSpec(
            name=name or str(cfg.get("_name_or_path") or family),
            family=family,
            source=str(meta.get("source", "")),
            published_parameters=float(published) if published is not None else None,
            max_context=max_context,
            checkpoint=checkpoint,
            **fields,
        )
    except (ValidationError, TypeError, ValueError, OverflowError) as e:
        raise InputError(f"model config has an invalid value: {first_error(e)}") from None
    return with_unquantized(spec, cfg)


def _moe_layers(n_layers: int, first_dense: int, freq: int, dense_list: list[int]) -> tuple:
    freq = max(1, int(freq))
    return tuple(
        i for i in range(n_layers)
        if i >= first_dense and (i - first_dense) % freq == 0 and i not in set(dense_list)
    )


def _llama_like(cfg: dict[str, Any], family: str) -> dict[str, Any]:
    h = _positive_int(_req(cfg, "hidden_size"), "hidden_size")
    heads = _positive_int(_req(cfg, "num_attention_heads"), "num_attention_heads")
    layers = _positive_int(_req(cfg, "num_hidden_layers"), "num_hidden_layers", _MAX_LAYERS)
    kv = _opt(cfg, "num_key_value_heads", heads)
    head_dim = _head_dim(cfg, h, heads)
    moe = None
    inter_key = "intermediate_size"
    if family == "mixtral":
        n_exp = _positive_int(_req(cfg, "num_local_experts"), "num_local_experts")
        moe = MoESpec(
            num_experts=n_exp,
            top_k=_positive_int(_req(cfg, "num_experts_per_tok"), "num_experts_per_tok"),
            expert_intermediate_size=_positive_int(_req(cfg, "intermediate_size"),
                                                   "intermediate_size"),
            moe_layers=tuple(range(layers)),
        )
    elif family in ("qwen2_moe", "qwen3_moe"):
        n_exp = _positive_int(_req(cfg, "num_experts"), "num_experts")
        shared = _count(_opt(cfg, "shared_expert_intermediate_size", 0),
                        "shared_expert_intermediate_size")
        moe = MoESpec(
            num_experts=n_exp,
            top_k=_positive_int(_req(cfg, "num_experts_per_tok"), "num_experts_per_tok"),
            expert_intermediate_size=_positive_int(_req(cfg, "moe_intermediate_size"),
                                                   "moe_intermediate_size"),
            num_shared_experts=1 if shared else 0,
            shared_intermediate_size=shared,
            moe_layers=_moe_layers(
                layers, 0,
                _positive_int(_opt(cfg, "decoder_sparse_step", 1), "decoder_sparse_step"),
                _layer_list(_opt(cfg, "mlp_only_layers", []), "mlp_only_layers")),
        )
    inter = _req(cfg, inter_key)
    return dict(
        hidden_size=h,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=_req(cfg, "vocab_size"),
        tie_word_embeddings=_flag(cfg, "tie_word_embeddings", False),
        gated_mlp=True,
        qkv_bias=family in ("qwen2", "qwen2_moe") or _flag(cfg, "attention_bias", False),
        qk_norm=family in ("qwen3", "qwen3_moe"),
        moe=moe,
    )


def _deepseek(cfg: dict[str, Any]) -> dict[str, Any]:
    h = _positive_int(_req(cfg, "hidden_size"), "hidden_size")
    heads = _positive_int(_req(cfg, "num_attention_heads"), "num_attention_heads")
    layers = _positive_int(_req(cfg, "num_hidden_layers"), "num_hidden_layers", _MAX_LAYERS)
    q_lora = cfg.get("q_lora_rank")
    mla = MLASpec(
        q_lora_rank=None if q_lora is None else _positive_int(q_lora, "q_lora_rank"),
        kv_lora_rank=_positive_int(_req(cfg, "kv_lora_rank"), "kv_lora_rank"),
        qk_nope_head_dim=_positive_int(_req(cfg, "qk_nope_head_dim"), "qk_nope_head_dim"),
        qk_rope_head_dim=_positive_int(_req(cfg, "qk_rope_head_dim"), "qk_rope_head_dim"),
        v_head_dim=_positive_int(_req(cfg, "v_head_dim"), "v_head_dim"),
    )
    n_routed = _count(_opt(cfg, "n_routed_experts", 0), "n_routed_experts")
    if not n_routed and cfg.get("num_experts_per_tok"):
        raise InputError(f"model config: num_experts_per_tok {show_value(cfg['num_experts_per_tok'])}"
                         " routes to experts, but n_routed_experts is 0 or missing")
    moe = None
    if n_routed:
        moe_inter = _positive_int(_req(cfg, "moe_intermediate_size"), "moe_intermediate_size")
        n_shared = _count(_opt(cfg, "n_shared_experts", 0), "n_shared_experts", 1 << 16)
        moe = MoESpec(
            num_experts=n_routed,
            top_k=_positive_int(_req(cfg, "num_experts_per_tok"), "num_experts_per_tok"),
            expert_intermediate_size=moe_inter,
            num_shared_experts=n_shared,
            shared_intermediate_size=moe_inter * n_shared,
            moe_layers=_moe_layers(
                layers, _count(_opt(cfg, "first_k_dense_replace", 0), "first_k_dense_replace"),
                _positive_int(_opt(cfg, "moe_layer_freq", 1), "moe_layer_freq"), []),
        )
    return dict(
        hidden_size=h,
        num_layers=layers,
        num_attention_heads=heads,
        # MLA caches one latent vector per token shared by all heads.
        num_kv_heads=1,
        head_dim=mla.qk_nope_head_dim + mla.qk_rope_head_dim,
        intermediate_size=_req(cfg, "intermediate_size"),
        vocab_size=_req(cfg, "vocab_size"),
        tie_word_embeddings=_flag(cfg, "tie_word_embeddings", False),
        gated_mlp=True,
        mla=mla,
        moe=moe,
    )


def _falcon(cfg: dict[str, Any]) -> dict[str, Any]:
    h = _positive_int(_req(cfg, "hidden_size", "n_embed"), "hidden_size")
    heads = _positive_int(_req(cfg, "num_attention_heads", "n_head"), "num_attention_heads")
    layers = _positive_int(_req(cfg, "num_hidden_layers", "n_layer"), "num_hidden_layers",
                           _MAX_LAYERS)
    new_arch = _flag(cfg, "new_decoder_architecture", False)
    if new_arch:
        kv = _req(cfg, "num_kv_heads", "n_head_kv")
    elif _flag(cfg, "multi_query", True):
        kv = 1
    else:
        kv = heads
    return dict(
        hidden_size=h,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=kv,
        head_dim=_head_dim(cfg, h, heads),
        intermediate_size=_opt(cfg, "ffn_hidden_size", 4 * h),
        vocab_size=_req(cfg, "vocab_size"),
        tie_word_embeddings=_flag(cfg, "tie_word_embeddings", True),
        gated_mlp=False,
        parallel_attention=_flag(cfg, "parallel_attn", True),
        norm="layernorm",
        linear_bias=_flag(cfg, "bias", False),
        # The new decoder architecture has a LayerNorm before attention and one before the
        # MLP; the original one a single LayerNorm feeding both.
        norms_per_layer=2 if new_arch else 1,
    )


def _bloom(cfg: dict[str, Any]) -> dict[str, Any]:
    h = _positive_int(_req(cfg, "hidden_size", "n_embed"), "hidden_size")
    heads = _positive_int(_req(cfg, "n_head", "num_attention_heads"), "n_head")
    return dict(
        hidden_size=h,
        num_layers=_req(cfg, "n_layer", "num_hidden_layers"),
        num_attention_heads=heads,
        num_kv_heads=heads,
        head_dim=_head_dim(cfg, h, heads),
        intermediate_size=4 * h,
        vocab_size=_req(cfg, "vocab_size"),
        tie_word_embeddings=_flag(cfg, "tie_word_embeddings", True),
        gated_mlp=False,
        norm="layernorm",
        linear_bias=True,
        embedding_norm=True,
    )


def _opt_family(cfg: dict[str, Any]) -> dict[str, Any]:
    h = _positive_int(_req(cfg, "hidden_size"), "hidden_size")
    heads = _positive_int(_req(cfg, "num_attention_heads"), "num_attention_heads")
    return dict(
        hidden_size=h,
        num_layers=_req(cfg, "num_hidden_layers"),
        num_attention_heads=heads,
        num_kv_heads=heads,
        head_dim=_head_dim(cfg, h, heads),
        intermediate_size=_req(cfg, "ffn_dim"),
        vocab_size=_req(cfg, "vocab_size"),
        tie_word_embeddings=_flag(cfg, "tie_word_embeddings", True),
        gated_mlp=False,
        norm="layernorm",
        linear_bias=_flag(cfg, "enable_bias", True),
        # OPT offsets positions by 2 in its learned table.
        learned_positions=_positive_int(_req(cfg, "max_position_embeddings"),
                                        "max_position_embeddings") + 2,
    )


def load_model_file(path: str | Path, name: str = "") -> ModelSpec:
    """Read a ``config.json`` file; errors name the file and the problem."""
    p = Path(path)
    cfg = with_sidecar(read_json(p, "model config"), p)
    try:
        return model_from_config(cfg, name=name or model_name(cfg, p))
    except InputError as e:
        raise InputError(f"{p.name}: {e}") from None


def model_name(cfg: Any, path: Path) -> str:
    """The name a model read from ``path`` goes by, and that an engine can load it by:
    the config's ``_name_or_path``, else the Hugging Face id of a hub cache snapshot
    (``models--org--name/snapshots/<rev>/config.json``), else the folder holding a
    ``config.json`` (engines load a local model by its folder), else the file's stem."""
    given = cfg.get("_name_or_path") if isinstance(cfg, dict) else None
    if isinstance(given, str) and given.strip() and given.isprintable():
        return given.strip()
    path = path.resolve()
    for parent in path.parents:
        if parent.name.startswith("models--") and parent.name.count("--") >= 2:
            return "/".join(parent.name.split("--")[1:3])
    if path.name == "config.json":
        return str(path.parent)
    return path.stem
