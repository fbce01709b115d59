"""Conversion mappings: which source rows become which target tensor, and the target's configs.

``build_mapping`` turns a source ``Checkpoint``'s metadata (kind, config, tensor names and
shapes) into the list of target tensors, each assembled from row ranges of source tensors, plus
the text files the target needs. It reads no tensor data; the engine executes the mappings.

Assembling a target: take each ``SourceSlice`` (dim-0 rows ``[start, end)``, or the whole
tensor), concatenate them along dim 0, then apply ``transform``:

- ``None``: the concatenation already has the target ``shape``.
- ``"reshape"``: ``x.reshape(shape)``, same elements in the same row-major order (OLMo-core's
  flattened MoE router, one expert of a 3-D expert tensor).
- ``"transpose"``: ``x.reshape(shape[1], shape[0]).t()``, the 2-D transpose of the rows
  (OLMo-core ``MoEMLP`` expert weights, stored as ``input x output``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_inspect.convert import configs
from olmo_inspect.convert.olmo_names import (
    DCP_MODEL_PREFIX,
    HF_OLMO_PREFIX,
    OLMO_CORE_BLOCK_ONE_TO_ONE,
    OLMO_CORE_EXPERT_WEIGHTS,
    OLMO_CORE_KINDS,
    OLMO_CORE_TOP_LEVEL,
    OLMO_PREFIX,
    OLMO_TRAINER_KINDS,
    hf_to_olmo,
    is_rotary_buffer,
    model_section,
    olmo_core_expert_parts,
    olmo_dims,
    olmo_to_hf,
)
from olmo_inspect.errors import ConversionError
from olmo_inspect.model import Checkpoint, CheckpointKind, TensorInfo

log = logging.getLogger(__name__)

TRANSFORM_RESHAPE = "reshape"
TRANSFORM_TRANSPOSE = "transpose"

# Unmapped names quoted in one error message; the rest are counted.
MAX_NAMES_IN_ERROR = 3

ROTARY_DROP_REASON = "rotary inv_freq buffer; the target recomputes it from the config"


@dataclass(frozen=True)
class SourceSlice:
    """Rows ``[start, end)`` of dim 0 of one source tensor, or all of it when ``rows`` is None."""

    name: str
    rows: tuple[int, int] | None


@dataclass(frozen=True)
class TensorMapping:
    """One target tensor: its sources, concatenated along dim 0, then ``transform``."""

    target: str
    sources: tuple[SourceSlice, ...]
    shape: tuple[int, ...]
    transform: str | None = None
    reason: str = ""


@dataclass
class MappingOptions:
    """Choices that change the target's config files.

    ``fix_eos_token_id`` replaces OLMo 1's ``eos_token_id`` 0 with 50279 (GPT-NeoX OLMo
    tokenizer), as OLMo's own conversion scripts do. ``tokenizer_dir`` is a directory of
    Transformers tokenizer files, or one ``tokenizers`` JSON file, to ship with the target.
    ``dtype`` is written into a Transformers ``config.json``; None uses the source's.
    ``defer_transformers_config`` builds a Transformers ``config.json`` and
    ``generation_config.json`` on a background thread (``MappingResult.deferred``) instead of
    before ``build_mapping`` returns.
    """

    fix_eos_token_id: bool = True
    tokenizer_dir: Path | None = None
    dtype: str | None = None
    defer_transformers_config: bool = False


@dataclass
class MappingResult:
    """The plan of one conversion: target tensors, dropped sources, files to write or copy.

    ``files`` maps an output file name to its text. ``copy_files`` maps an output file name to
    an existing file to copy (tokenizer files, ``generation_config.json``). ``deferred`` is the
    Transformers config files still being built, which are then absent from ``files``.
    """

    mappings: list[TensorMapping]
    dropped: dict[str, str]
    files: dict[str, str]
    notes: list[str]
    target_model_type: str | None
    copy_files: dict[str, Path] = field(default_factory=dict)
    deferred: configs.DeferredConfigFiles | None = None


# --- which targets fit -------------------------------------------------------------------------

_SHARDED_TARGET_REASON = (
    "olmo-inspect writes unsharded checkpoints only; convert to {unsharded} instead"
)


def _unsharded_form(kind: CheckpointKind) -> CheckpointKind:
    """Return the unsharded kind of a source's own family."""
    if kind in OLMO_CORE_KINDS:
        return CheckpointKind.OLMO_CORE_UNSHARDED
    if kind in OLMO_TRAINER_KINDS:
        return CheckpointKind.OLMO_UNSHARDED
    return kind


def _check_target(source: Checkpoint, target: CheckpointKind) -> str | None:
    """Return why ``source`` cannot become ``target``, or None when it can."""
    kind = source.kind
    section = model_section(kind, source.config)

    if target.is_sharded:
        return _SHARDED_TARGET_REASON.format(unsharded=_unsharded_form(kind).value)
    if target == _unsharded_form(kind):
        return None

    if kind in OLMO_TRAINER_KINDS or kind == CheckpointKind.HF_OLMO:
        if target == CheckpointKind.TRANSFORMERS:
            return configs.check_olmo_for_transformers(section)[1]
        if target in (CheckpointKind.HF_OLMO, CheckpointKind.OLMO_UNSHARDED):
            return None if section else "the checkpoint has no OLMo model config to carry over"
        return f"no mapping from {kind.value} to {target.value}; convert to transformers instead"

    if kind in OLMO_CORE_KINDS:
        if target == CheckpointKind.TRANSFORMERS:
            return configs.check_olmo_core_for_transformers(source.config)[1]
        return (
            f"no mapping from {kind.value} to {target.value}; convert to transformers or "
            "olmo-core-unsharded"
        )

    if kind == CheckpointKind.TRANSFORMERS:
        if target in (CheckpointKind.OLMO_UNSHARDED, CheckpointKind.HF_OLMO):
            return configs.check_hf_for_olmo(source.config)
        if configs.check_hf_for_olmo(source.config) is not None:
            return f"no mapping from transformers to {target.value}"
        return (
            f"no mapping from transformers to {target.value}; convert to olmo-unsharded or hf-olmo"
        )

    return f"no mapping from {kind.value} to {target.value}"


def valid_targets(source: Checkpoint) -> dict[CheckpointKind, str | None]:
    """Return every kind with None when ``source`` converts to it, else the reason it does not.

    Checks the config only (no transformers import); ``build_mapping`` also checks that every
    tensor maps.
    """
    return {target: _check_target(source, target) for target in CheckpointKind}


# --- entry point -------------------------------------------------------------------------------


def build_mapping(
    source: Checkpoint, target: CheckpointKind, options: MappingOptions | None = None
) -> MappingResult:
    """Plan the conversion of ``source`` into ``target`` from metadata only.

    Raises ConversionError when a setting rules the target out, when a source tensor is neither
    mapped nor dropped with a reason, or when a tensor the target model needs has no source.
    """
    options = options or MappingOptions()
    reason = _check_target(source, target)
    if reason is not None:
        raise ConversionError(
            f"{source.path}: cannot convert {source.kind.value} to {target.value}: {reason}"
        )

    kind = source.kind
    if target == _unsharded_form(kind):
        return _identity(source, target)

    if kind in OLMO_TRAINER_KINDS or kind == CheckpointKind.HF_OLMO:
        prefix = HF_OLMO_PREFIX if kind == CheckpointKind.HF_OLMO else ""
        if target == CheckpointKind.TRANSFORMERS:
            return _olmo_to_transformers(source, prefix, options)
        if target == CheckpointKind.HF_OLMO:
            return _olmo_to_hf_olmo(source, options)
        return _hf_olmo_to_olmo(source)

    if kind in OLMO_CORE_KINDS:
        return _olmo_core_to_transformers(source, options)

    return _transformers_to_olmo(source, target, options)


# --- helpers -----------------------------------------------------------------------------------


def _source_dir(source: Checkpoint) -> Path:
    """Return the directory of a checkpoint (the parent of a single-file checkpoint)."""
    return source.path.parent if source.path.is_file() else source.path


def _source_dtype(source: Checkpoint) -> str | None:
    """Return the floating dtype holding the most bytes of the source's tensors."""
    bytes_per_dtype: Counter[str] = Counter()
    for tensor in source.tensors:
        if tensor.dtype.startswith(("float", "bfloat")):
            bytes_per_dtype[tensor.dtype] += tensor.nbytes
    if not bytes_per_dtype:
        return None
    return bytes_per_dtype.most_common(1)[0][0]


def _config_text(source: Checkpoint, default_format: str) -> str:
    """Return the source's config text, or the parsed config rendered as JSON or YAML."""
    if source.config_text is not None:
        return source.config_text
    if default_format == "yaml":
        import yaml

        return yaml.safe_dump(source.config, sort_keys=False)
    import json

    return json.dumps(source.config, indent=2) + "\n"


def _transformers_config(
    model_type: str, fields: dict[str, Any], options: MappingOptions
) -> tuple[dict[str, str], configs.DeferredConfigFiles | None]:
    """Return the Transformers config texts now, or ``{}`` and their deferred build."""
    if options.defer_transformers_config:
        return {}, configs.DeferredConfigFiles(model_type, fields)
    config = configs.build_transformers_config(model_type, fields)
    return configs.transformers_config_files(config), None


def _rows(part_rows: tuple[int, int] | None, tensor: TensorInfo) -> tuple[int, ...]:
    """Return the shape of ``tensor`` restricted to ``part_rows`` of dim 0."""
    if part_rows is None:
        return tensor.shape
    return (part_rows[1] - part_rows[0], *tensor.shape[1:])


def _describe_rows(rows: tuple[int, int] | None, name: str, part: str) -> str:
    """Return the plan text of a mapping entry, e.g. ``rows 0:2048 of att_proj (q_proj)``."""
    if rows is None:
        return f"{name} renamed"
    short = name.rsplit(".", 2)[-2]
    return f"rows {rows[0]}:{rows[1]} of {short} ({part})"


def _unmapped_error(source: Checkpoint, target: str, names: list[str]) -> ConversionError:
    """Build the error for source tensors that no mapping covers."""
    shown = ", ".join(names[:MAX_NAMES_IN_ERROR])
    more = f" and {len(names) - MAX_NAMES_IN_ERROR} more" if len(names) > MAX_NAMES_IN_ERROR else ""
    return ConversionError(
        f"{source.path}: {len(names)} tensor(s) have no place in {target}: {shown}{more}; "
        "the config and the tensors disagree, or the model has parts the target lacks"
    )


def _check_targets(
    source: Checkpoint,
    target: str,
    mappings: list[TensorMapping],
    expected: dict[str, tuple[int, ...] | None],
) -> None:
    """Check that the mappings produce exactly the ``expected`` target names and shapes.

    A None shape in ``expected`` is not checked.
    """
    produced = {mapping.target: mapping for mapping in mappings}
    missing = sorted(set(expected) - set(produced))
    if missing:
        raise ConversionError(
            f"{source.path}: {target} needs {', '.join(missing[:MAX_NAMES_IN_ERROR])}"
            f"{' and more' if len(missing) > MAX_NAMES_IN_ERROR else ''} but the source has no "
            "tensor for it; the checkpoint is incomplete or its config does not match its tensors"
        )

    extra = sorted(set(produced) - set(expected))
    if extra:
        names = [source_slice.name for name in extra for source_slice in produced[name].sources]
        raise _unmapped_error(source, target, names)

    for name, shape in expected.items():
        if shape is not None and produced[name].shape != shape:
            raise ConversionError(
                f"{source.path}: {name} would have shape {produced[name].shape} but the config "
                f"gives {shape}; the config does not match the tensors"
            )


def _identity(source: Checkpoint, target: CheckpointKind) -> MappingResult:
    """Map every tensor to itself (unshard, or re-form within one kind)."""
    mappings: list[TensorMapping] = []
    dropped: dict[str, str] = {}
    for tensor in source.tensors:
        if is_rotary_buffer(tensor.name):
            dropped[tensor.name] = ROTARY_DROP_REASON
            continue
        mappings.append(
            TensorMapping(
                tensor.name, (SourceSlice(tensor.name, None),), tensor.shape, None, "unchanged"
            )
        )

    files: dict[str, str] = {}
    copy_files: dict[str, Path] = {}
    if source.config:
        if target == CheckpointKind.OLMO_UNSHARDED:
            files[configs.CONFIG_YAML] = _config_text(source, "yaml")
        else:
            files[configs.CONFIG_JSON] = _config_text(source, "json")

    if target in (CheckpointKind.TRANSFORMERS, CheckpointKind.HF_OLMO):
        directory = _source_dir(source)
        copy_files.update(configs.tokenizer_from_directory(directory).copy_files)
        generation = directory / configs.GENERATION_CONFIG_JSON
        if generation.is_file():
            copy_files[configs.GENERATION_CONFIG_JSON] = generation

    model_type = source.config.get("model_type") if target == CheckpointKind.TRANSFORMERS else None
    if target == CheckpointKind.HF_OLMO:
        model_type = configs.HF_OLMO_MODEL_TYPE
    return MappingResult(mappings, dropped, files, [], model_type, copy_files)


# --- OLMo trainer / hf_olmo -> Transformers ----------------------------------------------------


def _expected_olmo_family_targets(
    model_type: str, n_layers: int, tied: bool, with_bias: bool
) -> set[str]:
    """Return the weight names Transformers writes for a dense ``olmo``/``olmo2``/``olmo3`` "
    "model."""
    names = {"model.embed_tokens.weight"}
    if not tied:
        names.add("lm_head.weight")
    if model_type != "olmo":
        names.add("model.norm.weight")

    for layer in range(n_layers):
        prefix = f"model.layers.{layer}."
        for projection in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names.add(f"{prefix}self_attn.{projection}.weight")
            if with_bias:
                names.add(f"{prefix}self_attn.{projection}.bias")
        for projection in ("gate_proj", "up_proj", "down_proj"):
            names.add(f"{prefix}mlp.{projection}.weight")
        if model_type != "olmo":
            names.update(
                {
                    f"{prefix}self_attn.q_norm.weight",
                    f"{prefix}self_attn.k_norm.weight",
                    f"{prefix}post_attention_layernorm.weight",
                    f"{prefix}post_feedforward_layernorm.weight",
                }
            )
    return names


def _olmo_tokenizer(
    source: Checkpoint,
    tokenizer_class: str,
    eos: int | None,
    pad: int | None,
    options: MappingOptions,
) -> configs.TokenizerFiles:
    """Find the tokenizer of an OLMo trainer or hf_olmo checkpoint and plan its files."""
    if options.tokenizer_dir is not None:
        return _tokenizer_from_option(options.tokenizer_dir, tokenizer_class, eos, pad)

    directory = _source_dir(source)
    if source.kind == CheckpointKind.HF_OLMO:
        found = configs.tokenizer_from_directory(directory)
        if found.copy_files:
            return found

    identifier = (source.config.get("tokenizer") or {}).get("identifier")
    local = configs.resolve_local_file(identifier, directory)
    if local is not None:
        return configs.tokenizer_from_json(local, tokenizer_class, eos, pad)

    result = configs.TokenizerFiles()
    result.notes.append(
        f"no local tokenizer file (config names {identifier!r}); the output has no tokenizer, "
        "add one with --tokenizer PATH or copy the tokenizer files into it"
    )
    return result


def _tokenizer_from_option(
    path: Path, tokenizer_class: str, eos: int | None, pad: int | None
) -> configs.TokenizerFiles:
    """Plan tokenizer files from the user's tokenizer directory or tokenizer JSON file."""
    if path.is_file():
        return configs.tokenizer_from_json(path, tokenizer_class, eos, pad)
    if not path.is_dir():
        raise ConversionError(
            f"{path}: tokenizer directory not found; pass a directory of tokenizer files"
        )

    found = configs.tokenizer_from_directory(path)
    if (
        configs.TOKENIZER_CONFIG_JSON not in found.copy_files
        and configs.TOKENIZER_JSON in found.copy_files
    ):
        return configs.tokenizer_from_json(
            found.copy_files[configs.TOKENIZER_JSON], tokenizer_class, eos, pad
        )
    if not found.copy_files:
        raise ConversionError(
            f"{path}: no tokenizer files (tokenizer.json, tokenizer_config.json) in this directory"
        )
    return found


def _olmo_eos_token_id(
    model: dict[str, Any], options: MappingOptions, notes: list[str]
) -> int | None:
    """Return the eos id for a Transformers config, replacing OLMo 1's 0 unless disabled."""
    eos = model.get("eos_token_id")
    if eos == configs.OLMO1_BAD_EOS_TOKEN_ID and options.fix_eos_token_id:
        notes.append(
            f"eos_token_id 0 of the source config replaced by {configs.GPT_NEOX_OLMO_EOS_TOKEN_ID} "
            "(end of text in the GPT-NeoX OLMo tokenizer), as OLMo's conversion scripts do; "
            "pass --keep-eos-token-id to keep 0"
        )
        return configs.GPT_NEOX_OLMO_EOS_TOKEN_ID
    return eos


def _olmo_tensor_mappings(
    source: Checkpoint, model: dict[str, Any], prefix: str
) -> tuple[list[TensorMapping], dict[str, str], list[str]]:
    """Split and rename OLMo trainer tensors (``prefix + transformer.*``) into Transformers names.

    Returns the mappings, the dropped tensors and the names no table maps.
    """
    mappings: list[TensorMapping] = []
    dropped: dict[str, str] = {}
    unmapped: list[str] = []

    for tensor in source.tensors:
        if is_rotary_buffer(tensor.name):
            dropped[tensor.name] = ROTARY_DROP_REASON
            continue
        if not tensor.name.startswith(prefix + OLMO_PREFIX):
            unmapped.append(tensor.name)
            continue

        parts = olmo_to_hf(tensor.name[len(prefix) :], model)
        if parts is None:
            unmapped.append(tensor.name)
            continue

        last_row = parts[-1].rows[1] if parts[-1].rows is not None else None
        if last_row is not None and (not tensor.shape or tensor.shape[0] != last_row):
            raise ConversionError(
                f"{source.path}: {tensor.name} has shape {tensor.shape} but the config splits it "
                f"into {last_row} rows; the config does not match the tensors"
            )

        for part in parts:
            label = part.name.rsplit(".", 2)[-2]
            mappings.append(
                TensorMapping(
                    part.name,
                    (SourceSlice(tensor.name, part.rows),),
                    _rows(part.rows, tensor),
                    None,
                    _describe_rows(part.rows, tensor.name, label),
                )
            )
    return mappings, dropped, unmapped


def _olmo_to_transformers(
    source: Checkpoint, prefix: str, options: MappingOptions
) -> MappingResult:
    """Plan OLMo trainer (or hf_olmo, ``prefix`` ``model.``) -> Transformers olmo/olmo2."""
    model = model_section(source.kind, source.config)
    model_type, reason = configs.check_olmo_for_transformers(model)
    if model_type is None:
        raise ConversionError(f"{source.path}: cannot convert to transformers: {reason}")

    notes: list[str] = []
    mappings, dropped, unmapped = _olmo_tensor_mappings(source, model, prefix)
    if unmapped:
        raise _unmapped_error(source, model_type, unmapped)

    dims = olmo_dims(model)
    tied = bool(model.get("weight_tying", True))
    vocab = int(model.get("embedding_size") or model["vocab_size"])
    expected: dict[str, tuple[int, ...] | None] = dict.fromkeys(
        _expected_olmo_family_targets(model_type, dims.n_layers, tied, with_bias=False)
    )
    expected["model.embed_tokens.weight"] = (vocab, dims.d_model)
    _check_targets(source, model_type, mappings, expected)

    if (
        model_type == "olmo"
        and float(model.get("layer_norm_eps", configs.OLMO_LAYER_NORM_EPS))
        != configs.OLMO_LAYER_NORM_EPS
    ):
        notes.append(
            f"model.layer_norm_eps is {model.get('layer_norm_eps')} but Transformers' Olmo "
            f"always uses {configs.OLMO_LAYER_NORM_EPS}; outputs will differ slightly"
        )

    eos = _olmo_eos_token_id(model, options, notes)
    dtype = options.dtype or _source_dtype(source)
    fields = configs.olmo_transformers_fields(model, model_type, eos, dtype)
    files, deferred = _transformers_config(model_type, fields, options)

    tokenizer_class = "GPTNeoXTokenizerFast" if model_type == "olmo" else "GPT2TokenizerFast"
    tokenizer = _olmo_tokenizer(source, tokenizer_class, eos, model.get("pad_token_id"), options)
    files.update(tokenizer.files)
    notes.extend(tokenizer.notes)
    return MappingResult(
        mappings, dropped, files, notes, model_type, tokenizer.copy_files, deferred
    )


# --- OLMo trainer <-> hf_olmo --------------------------------------------------------------------


def _expected_olmo_names(model: dict[str, Any]) -> set[str]:
    """Return the OLMo trainer tensor names of a ``sequential`` model with this config."""
    dims = olmo_dims(model)
    affine = bool(model.get("layer_norm_with_affine", True))
    names = {"transformer.wte.weight"}
    if not model.get("weight_tying", True):
        names.add("transformer.ff_out.weight")
    if affine:
        names.add("transformer.ln_f.weight")

    for layer in range(dims.n_layers):
        prefix = f"transformer.blocks.{layer}."
        names.update(
            prefix + suffix
            for suffix in ("att_proj.weight", "attn_out.weight", "ff_proj.weight", "ff_out.weight")
        )
        if affine:
            names.update({prefix + "attn_norm.weight", prefix + "ff_norm.weight"})
        if model.get("attention_layer_norm"):
            names.update({prefix + "q_norm.weight", prefix + "k_norm.weight"})
    return names


def _olmo_to_hf_olmo(source: Checkpoint, options: MappingOptions) -> MappingResult:
    """Plan OLMo trainer -> hf_olmo: weights renamed ``transformer.*`` -> "
    "``model.transformer.*``."""
    model = model_section(source.kind, source.config)
    mappings: list[TensorMapping] = []
    dropped: dict[str, str] = {}
    for tensor in source.tensors:
        if is_rotary_buffer(tensor.name):
            dropped[tensor.name] = ROTARY_DROP_REASON
            continue
        if not tensor.name.startswith(OLMO_PREFIX):
            raise _unmapped_error(source, "hf_olmo", [tensor.name])
        target = HF_OLMO_PREFIX + tensor.name
        mappings.append(
            TensorMapping(
                target,
                (SourceSlice(tensor.name, None),),
                tensor.shape,
                None,
                "prefixed with model.",
            )
        )

    files = {configs.CONFIG_JSON: configs.hf_olmo_config_json(model)}
    tokenizer = _olmo_tokenizer(
        source,
        "GPTNeoXTokenizerFast",
        model.get("eos_token_id"),
        model.get("pad_token_id"),
        options,
    )
    files.update(tokenizer.files)
    return MappingResult(
        mappings, dropped, files, tokenizer.notes, configs.HF_OLMO_MODEL_TYPE, tokenizer.copy_files
    )


def _hf_olmo_to_olmo(source: Checkpoint) -> MappingResult:
    """Plan hf_olmo -> OLMo trainer: ``model.`` stripped, config.yaml from config.json's fields."""
    mappings: list[TensorMapping] = []
    dropped: dict[str, str] = {}
    for tensor in source.tensors:
        if is_rotary_buffer(tensor.name):
            dropped[tensor.name] = ROTARY_DROP_REASON
            continue
        if not tensor.name.startswith(HF_OLMO_PREFIX + OLMO_PREFIX):
            raise _unmapped_error(source, "olmo-unsharded", [tensor.name])
        target = tensor.name[len(HF_OLMO_PREFIX) :]
        mappings.append(
            TensorMapping(
                target,
                (SourceSlice(tensor.name, None),),
                tensor.shape,
                None,
                "model. prefix removed",
            )
        )

    notes: list[str] = []
    model = dict(configs.OLMO_MODEL_DEFAULTS)
    model.update(configs.olmo_model_fields(source.config))
    missing = [name for name in configs.OLMO_MODEL_DEFAULTS if name not in source.config]
    if missing:
        notes.append(
            "config.yaml model fields missing from config.json use OLMo's defaults: "
            + ", ".join(missing)
        )

    tokenizer = configs.tokenizer_from_directory(_source_dir(source))
    identifier = configs.TOKENIZER_JSON if configs.TOKENIZER_JSON in tokenizer.copy_files else None
    copy_files = (
        {configs.TOKENIZER_JSON: tokenizer.copy_files[configs.TOKENIZER_JSON]} if identifier else {}
    )
    if identifier:
        notes.append(
            "tokenizer.json is copied and config.yaml names it by a relative path; OLMo "
            "resolves it from the working directory"
        )
    files = {configs.CONFIG_YAML: configs.olmo_config_yaml(model, identifier, notes)}
    return MappingResult(mappings, dropped, files, notes, None, copy_files)


# --- OLMo-core -> Transformers -------------------------------------------------------------------


def _olmo_core_part_mappings(
    tensor: TensorInfo, name: str, model: dict[str, Any], num_experts: int | None
) -> list[TensorMapping] | None:
    """Map one OLMo-core tensor (``name`` without a DCP prefix) to Transformers tensors."""
    if name in OLMO_CORE_TOP_LEVEL:
        target = OLMO_CORE_TOP_LEVEL[name]
        return [
            TensorMapping(
                target, (SourceSlice(tensor.name, None),), tensor.shape, None, f"{name} renamed"
            )
        ]

    if not name.startswith("blocks."):
        return None
    _, layer, suffix = name.split(".", 2)

    if suffix in OLMO_CORE_BLOCK_ONE_TO_ONE:
        target = f"model.layers.{layer}.{OLMO_CORE_BLOCK_ONE_TO_ONE[suffix]}"
        if suffix == "feed_forward_moe.router.weight" and num_experts:
            shape = (num_experts, tensor.numel // num_experts)
            transform = None if tensor.shape == shape else TRANSFORM_RESHAPE
            return [
                TensorMapping(
                    target,
                    (SourceSlice(tensor.name, None),),
                    shape,
                    transform,
                    "router reshaped to (experts, d_model)",
                )
            ]
        return [
            TensorMapping(
                target, (SourceSlice(tensor.name, None),), tensor.shape, None, f"{name} renamed"
            )
        ]

    if suffix not in OLMO_CORE_EXPERT_WEIGHTS:
        return None

    weight = suffix.rsplit(".", 1)[1]
    parts = olmo_core_expert_parts(layer, weight, model, stored_ndim=len(tensor.shape))
    mappings: list[TensorMapping] = []
    for expert, part in enumerate(parts):
        assert part.rows is not None
        if len(tensor.shape) == 3:
            rows, columns = tensor.shape[1], tensor.shape[2]
        else:
            rows, columns = part.rows[1] - part.rows[0], tensor.shape[1]

        if part.transposed:
            shape, transform = (columns, rows), TRANSFORM_TRANSPOSE
        else:
            shape = (rows, columns)
            transform = TRANSFORM_RESHAPE if len(tensor.shape) == 3 else None
        action = "transposed" if part.transposed else "as is"
        reason = f"expert {expert}: rows {part.rows[0]}:{part.rows[1]} of {weight}, {action}"
        mappings.append(
            TensorMapping(
                part.name, (SourceSlice(tensor.name, part.rows),), shape, transform, reason
            )
        )
    return mappings


def _expected_flex_olmo_targets(
    layout: configs.OlmoCoreLayout,
) -> dict[str, tuple[int, ...] | None]:
    """Return the per-expert weight names and shapes FlexOlmo writes to disk."""
    assert layout.num_experts is not None
    names: dict[str, tuple[int, ...] | None] = dict.fromkeys(
        name
        for name in _expected_olmo_family_targets(
            "olmo2", layout.n_layers, layout.tie_word_embeddings, False
        )
        if ".mlp." not in name
    )
    hidden, d_model = layout.intermediate_size, layout.d_model
    for layer in range(layout.n_layers):
        prefix = f"model.layers.{layer}.mlp."
        names[prefix + "gate.weight"] = (layout.num_experts, d_model)
        for expert in range(layout.num_experts):
            names[f"{prefix}experts.{expert}.gate_proj.weight"] = (hidden, d_model)
            names[f"{prefix}experts.{expert}.up_proj.weight"] = (hidden, d_model)
            names[f"{prefix}experts.{expert}.down_proj.weight"] = (d_model, hidden)
    return names


def _olmo_core_to_transformers(source: Checkpoint, options: MappingOptions) -> MappingResult:
    """Plan OLMo-core -> Transformers olmo2, olmo3 (sliding window) or flex_olmo (MoE)."""
    layout, reason = configs.check_olmo_core_for_transformers(source.config)
    if layout is None:
        raise ConversionError(f"{source.path}: cannot convert to transformers: {reason}")
    model = source.config["model"]

    mappings: list[TensorMapping] = []
    dropped: dict[str, str] = {}
    unmapped: list[str] = []
    for tensor in source.tensors:
        # OLMo-core names never start with "model."; a DCP key prefix may still be there.
        name = tensor.name.removeprefix(DCP_MODEL_PREFIX)
        if is_rotary_buffer(name):
            dropped[tensor.name] = ROTARY_DROP_REASON
            continue
        # NOTE: a tied OLMo-core model stores lm_head.w_out.weight as the embedding itself; this
        # drops it without comparing values, which no test with a tied OLMo-core model checks.
        if name == "lm_head.w_out.weight" and layout.tie_word_embeddings:
            dropped[tensor.name] = (
                "tie_word_embeddings: the target reuses model.embed_tokens.weight"
            )
            continue
        entries = _olmo_core_part_mappings(tensor, name, model, layout.num_experts)
        if entries is None:
            unmapped.append(tensor.name)
            continue
        mappings.extend(entries)

    if unmapped:
        raise _unmapped_error(source, layout.model_type, unmapped)

    with_bias = any(tensor.name.endswith("attention.w_q.bias") for tensor in source.tensors)
    if layout.model_type == "flex_olmo":
        expected = _expected_flex_olmo_targets(layout)
    else:
        expected = dict.fromkeys(
            _expected_olmo_family_targets(
                layout.model_type, layout.n_layers, layout.tie_word_embeddings, with_bias
            )
        )
    expected["model.embed_tokens.weight"] = (layout.vocab_size, layout.d_model)
    _check_targets(source, layout.model_type, mappings, expected)

    notes: list[str] = []
    dtype = options.dtype or _source_dtype(source)
    fields = configs.olmo_core_transformers_fields(layout, source.config, dtype, notes)
    if with_bias:
        fields["attention_bias"] = True
    files, deferred = _transformers_config(layout.model_type, fields, options)
    if layout.layer_types is not None:
        notes.append(
            f"sliding-window layers found: olmo3 with sliding_window {layout.sliding_window} "
            "(OLMo-core's window + 1, because Transformers counts the current token)"
        )

    tokenizer_section = (source.config.get("dataset") or {}).get("tokenizer") or {}
    eos, pad = tokenizer_section.get("eos_token_id"), tokenizer_section.get("pad_token_id")
    if options.tokenizer_dir is not None:
        tokenizer = _tokenizer_from_option(options.tokenizer_dir, "GPT2TokenizerFast", eos, pad)
    else:
        identifier = tokenizer_section.get("identifier")
        local = configs.resolve_local_file(identifier, _source_dir(source))
        if local is not None:
            tokenizer = configs.tokenizer_from_json(local, "GPT2TokenizerFast", eos, pad)
        else:
            tokenizer = configs.TokenizerFiles()
            tokenizer.notes.append(
                f"no local tokenizer file (config names {identifier!r}); add one with the "
                "tokenizer directory option, e.g. a download of that Hugging Face repository"
            )
    files.update(tokenizer.files)
    notes.extend(tokenizer.notes)
    return MappingResult(
        mappings, dropped, files, notes, layout.model_type, tokenizer.copy_files, deferred
    )


# --- Transformers -> OLMo trainer / hf_olmo ------------------------------------------------------


def _transformers_to_olmo(
    source: Checkpoint, target: CheckpointKind, options: MappingOptions
) -> MappingResult:
    """Plan Transformers olmo/olmo2 -> OLMo trainer (fusing q/k/v and up/gate) or hf_olmo."""
    config = source.config
    norm_after = config.get("model_type") == "olmo2"
    tied = bool(config.get("tie_word_embeddings", False))
    prefix = HF_OLMO_PREFIX if target == CheckpointKind.HF_OLMO else ""

    groups: dict[str, dict[int, TensorInfo]] = {}
    dropped: dict[str, str] = {}
    unmapped: list[str] = []
    for tensor in source.tensors:
        if is_rotary_buffer(tensor.name):
            dropped[tensor.name] = ROTARY_DROP_REASON
            continue
        if tensor.name == "lm_head.weight" and tied:
            dropped[tensor.name] = (
                "tie_word_embeddings: OLMo's weight_tying reuses transformer.wte.weight"
            )
            continue
        found = hf_to_olmo(tensor.name, norm_after)
        if found is None:
            unmapped.append(tensor.name)
            continue
        olmo_name, index = found
        groups.setdefault(olmo_name, {})[index] = tensor

    if unmapped:
        raise _unmapped_error(source, target.value, unmapped)

    notes: list[str] = []
    tokenizer_option = options.tokenizer_dir
    tokenizer_dir = (
        tokenizer_option
        if tokenizer_option is not None and tokenizer_option.is_dir()
        else _source_dir(source)
    )
    tokenizer_json = (
        tokenizer_option
        if tokenizer_option is not None and tokenizer_option.is_file()
        else tokenizer_dir / configs.TOKENIZER_JSON
    )
    vocab_size = configs.tokenizer_vocab_size(tokenizer_json) if tokenizer_json.is_file() else None
    if vocab_size is not None and vocab_size > int(config["vocab_size"]):
        notes.append(
            f"{tokenizer_json} has {vocab_size} tokens, more than the embedding's rows; "
            "vocab_size uses the embedding"
        )
        vocab_size = None
    model = configs.olmo_model_from_transformers(config, vocab_size, notes)
    if vocab_size is not None:
        notes.append(f"model.vocab_size {vocab_size} is the size of {tokenizer_json}")

    mappings: list[TensorMapping] = []
    for olmo_name, parts in sorted(groups.items()):
        fused = olmo_name.endswith(("att_proj.weight", "ff_proj.weight"))
        if olmo_name.endswith("att_proj.weight"):
            wanted = 3
        elif fused:
            wanted = 2
        else:
            wanted = 1
        if sorted(parts) != list(range(wanted)):
            raise ConversionError(
                f"{source.path}: {olmo_name} needs {wanted} Transformers tensors but only "
                f"{', '.join(tensor.name for tensor in parts.values())} exist; the checkpoint "
                "is incomplete"
            )
        ordered = [parts[index] for index in range(wanted)]
        rows = sum(tensor.shape[0] for tensor in ordered)
        shape = (rows, *ordered[0].shape[1:])
        reason = (
            "fused from " + " + ".join(tensor.name.rsplit(".", 2)[-2] for tensor in ordered)
            if fused
            else f"{ordered[0].name} renamed"
        )
        mappings.append(
            TensorMapping(
                prefix + olmo_name,
                tuple(SourceSlice(tensor.name, None) for tensor in ordered),
                shape,
                None,
                reason,
            )
        )

    expected = {prefix + name: None for name in _expected_olmo_names(model)}
    dims = olmo_dims(model)
    expected[prefix + "transformer.blocks.0.att_proj.weight"] = (
        dims.d_model + 2 * dims.kv_dim,
        dims.d_model,
    )
    expected[prefix + "transformer.blocks.0.ff_proj.weight"] = (dims.mlp_hidden_size, dims.d_model)
    _check_targets(source, target.value, mappings, expected)

    directory_files = configs.tokenizer_from_directory(tokenizer_dir)
    copy_files: dict[str, Path] = {}
    files: dict[str, str] = {}
    if target == CheckpointKind.HF_OLMO:
        copy_files.update(directory_files.copy_files)
        files[configs.CONFIG_JSON] = configs.hf_olmo_config_json(model)
        return MappingResult(
            mappings, dropped, files, notes, configs.HF_OLMO_MODEL_TYPE, copy_files
        )

    identifier = None
    if tokenizer_json.is_file():
        copy_files[configs.TOKENIZER_JSON] = tokenizer_json
        identifier = configs.TOKENIZER_JSON
        notes.append(
            "tokenizer.json is copied and config.yaml names it by a relative path; OLMo "
            "resolves it from the working directory"
        )
    files[configs.CONFIG_YAML] = configs.olmo_config_yaml(model, identifier, notes)
    return MappingResult(mappings, dropped, files, notes, None, copy_files)
