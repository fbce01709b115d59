"""Config files and trainer state the samples write next to their weights.

``olmo_train_config`` returns OLMo's ``TrainConfig`` layout (``config.yaml``); the field set
follows what ai2-olmo 0.6.0 saves. ``olmo_core_experiment_config`` returns an OLMo-core 3
experiment config (``config.json``, no ``model_type``). The trainer-state builders return the
dicts OLMo (``train.pt``) and OLMo-core (``train/rank{N}.pt``) save, RNG states included.
"""

from __future__ import annotations

import random
import sys
from pathlib import PosixPath
from typing import Any

import numpy as np
import torch

from olmo_inspect.samples.architectures import (
    ADAM_EPS,
    BETAS,
    LEARNING_RATE,
    MAX_GRAD_NORM,
    WEIGHT_DECAY,
    OlmoCoreShape,
    OlmoShape,
)

GLOBAL_STEP = 3
SEQUENCE_LENGTH = 64
GLOBAL_BATCH = 4
TOKENS_SEEN = GLOBAL_STEP * GLOBAL_BATCH * SEQUENCE_LENGTH
OLMO_CORE_VERSION = "3.0.0"
TOKENIZER = "tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"


def olmo_model_section(shape: OlmoShape) -> dict[str, Any]:
    """Return the ``model:`` section of an OLMo ``config.yaml`` for ``shape``."""
    norm_type = "rms" if shape.parametric_norm else "default"
    return {
        "d_model": shape.d_model,
        "n_heads": shape.n_heads,
        "n_kv_heads": shape.n_kv_heads,
        "clip_qkv": None,
        "n_layers": shape.n_layers,
        "mlp_ratio": shape.mlp_hidden_size // shape.d_model,
        "mlp_hidden_size": shape.mlp_hidden_size if shape.parametric_norm else None,
        "activation_type": "swiglu",
        "block_type": "sequential",
        "block_group_size": 1,
        "alibi": False,
        "alibi_bias_max": 8.0,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": 500000 if shape.parametric_norm else 10000,
        "flash_attention": False,
        "attention_dropout": 0.0,
        "multi_query_attention": None if shape.n_kv_heads else False,
        "attention_layer_norm": shape.attention_layer_norm,
        "residual_dropout": 0.0,
        "embedding_dropout": 0.0,
        "embedding_layer_norm": False,
        "layer_norm_type": norm_type,
        "layer_norm_with_affine": shape.parametric_norm,
        "layer_norm_eps": 1e-06 if shape.parametric_norm else 1e-05,
        "attention_layer_norm_with_affine": True,
        "max_sequence_length": SEQUENCE_LENGTH,
        "include_bias": False,
        "bias_for_layer_norm": False,
        "scale_logits": False,
        "vocab_size": shape.vocab_size,
        "embedding_size": shape.embedding_size,
        "weight_tying": shape.weight_tying,
        "eos_token_id": shape.vocab_size - 1,
        "pad_token_id": shape.vocab_size - 2,
        "init_device": "cpu",
        "init_fn": "normal",
        "init_std": 0.02,
        "init_cutoff_factor": None,
        "precision": "fp32",
        "scale_emb_init": False,
        "emb_init_std": None,
        "norm_after": shape.norm_after,
    }


def olmo_train_config(
    shape: OlmoShape,
    *,
    run_name: str,
    save_folder: str,
    sharded_checkpointer: str = "torch_legacy",
    distributed_strategy: str = "ddp",
) -> dict[str, Any]:
    """Return an OLMo ``TrainConfig`` dict (the content of ``config.yaml``)."""
    fsdp: dict[str, Any] | None = None
    ddp: dict[str, Any] | None = {"grad_sync_mode": "batch", "find_unused_params": False}
    if distributed_strategy == "fsdp":
        fsdp = {
            "use_orig_params": True,
            "sharding_strategy": "FULL_SHARD",
            "wrapping_strategy": "by_block",
            "precision": "pure",
            "hybrid_sharding_num_model_replicas": None,
        }
        ddp = None
    return {
        "run_name": run_name,
        "seed": 6198,
        "epoch": None,
        "dry_run": False,
        "model": olmo_model_section(shape),
        "optimizer": {
            "name": "adamw",
            "learning_rate": LEARNING_RATE,
            "weight_decay": WEIGHT_DECAY,
            "betas": list(BETAS),
            "eps": ADAM_EPS,
            "no_decay_norm_and_bias": None,
            "selective_updates": False,
            "decay_norm_and_bias": False,
            "decay_embeddings": False,
            "metrics_log_interval": None,
            "record_update_metrics": False,
        },
        "scheduler": {
            "name": "cosine_with_warmup",
            "units": "steps",
            "t_warmup": 2,
            "t_max": None,
            "alpha_f": 0.1,
            "grad_clip_warmup_steps": None,
            "grad_clip_warmup_factor": None,
            "warmup_min_lr": None,
        },
        "data": {
            "paths": ["data/sample-tokens.npy"],
            "memmap_dtype": "uint16",
            "pad_direction": "right",
            "num_workers": 0,
            "drop_last": False,
            "seed": None,
        },
        "restore_dataloader": True,
        "evaluators": [],
        "eval_interval": 1000,
        "tokenizer": {"identifier": TOKENIZER, "truncate_direction": "right"},
        "save_folder": save_folder,
        "remote_save_folder": None,
        "save_interval": 1000,
        "save_interval_unsharded": None,
        "save_num_checkpoints_to_keep": -1,
        "save_num_unsharded_checkpoints_to_keep": -1,
        "save_overwrite": True,
        "load_path": None,
        "load_path_sharded_checkpointer": None,
        "sharded_checkpointer": sharded_checkpointer,
        "new_style_checkpoints": None,
        "max_duration": 10,
        "global_train_batch_size": GLOBAL_BATCH,
        "device_train_batch_size": 2,
        "device_train_microbatch_size": 2,
        "device_eval_batch_size": 16,
        "max_grad_norm": MAX_GRAD_NORM,
        "max_grad_norm_ratio": None,
        "precision": "fp32",
        "wandb": None,
        "distributed_strategy": distributed_strategy,
        "fsdp": fsdp,
        "ddp": ddp,
        "activation_checkpointing": None,
    }


def _rms_norm_config() -> dict[str, Any]:
    return {
        "name": "rms",
        "eps": 1e-06,
        "bias": False,
        "dtype": "float32",
        "_CLASS_": "olmo_core.nn.layer_norm.LayerNormConfig",
    }


def olmo_core_experiment_config(
    shape: OlmoCoreShape, *, run_name: str, save_folder: str
) -> dict[str, Any]:
    """Return an OLMo-core 3 experiment config (the content of ``config.json``)."""
    attention = {
        "name": "default",
        "n_heads": shape.n_heads,
        "n_kv_heads": shape.n_kv_heads,
        "bias": False,
        "rope": {
            "name": "default",
            "theta": 500000,
            "full_precision": True,
            "_CLASS_": "olmo_core.nn.rope.RoPEConfig",
        },
        "qk_norm": _rms_norm_config(),
        "dtype": "float32",
        "use_head_qk_norm": False,
        "_CLASS_": "olmo_core.nn.attention.AttentionConfig",
        "type": "attention",
    }
    block = {
        "sequence_mixer": attention,
        "layer_norm": _rms_norm_config(),
        "feed_forward": {
            "hidden_size": shape.hidden_size,
            "name": "default",
            "bias": False,
            "dtype": "float32",
            "activation": "silu",
            "_CLASS_": "olmo_core.nn.feed_forward.FeedForwardConfig",
        },
        "name": "reordered_norm",
        "_CLASS_": "olmo_core.nn.transformer.config.TransformerBlockConfig",
    }
    return {
        "run_name": run_name,
        "model": {
            "d_model": shape.d_model,
            "vocab_size": shape.vocab_size,
            "n_layers": shape.n_layers,
            "block": block,
            "lm_head": {
                "name": "default",
                "layer_norm": _rms_norm_config(),
                "bias": False,
                "dtype": "float32",
                "_CLASS_": "olmo_core.nn.lm_head.LMHeadConfig",
            },
            "name": "default",
            "dtype": "float32",
            "init_method": "normal",
            "init_seed": 0,
            "init_std": 0.02,
            "tie_word_embeddings": False,
            "_CLASS_": "olmo_core.nn.transformer.config.TransformerConfig",
        },
        "dataset": {
            "tokenizer": {
                "vocab_size": shape.vocab_size - 24,
                "eos_token_id": shape.vocab_size - 25,
                "pad_token_id": 1,
                "identifier": "allenai/gpt-neox-olmo-dolma-v1_5",
                "_CLASS_": "olmo_core.data.tokenizer.TokenizerConfig",
            },
            "sequence_length": SEQUENCE_LENGTH,
            "_CLASS_": "olmo_core.data.numpy_dataset.NumpyFSLDatasetConfig",
        },
        "train_module": {
            "rank_microbatch_size": 128,
            "max_sequence_length": SEQUENCE_LENGTH,
            "optim": {
                "lr": LEARNING_RATE,
                "betas": list(BETAS),
                "eps": ADAM_EPS,
                "weight_decay": WEIGHT_DECAY,
                "_CLASS_": "olmo_core.optim.adamw.AdamWConfig",
                "type": "adamw",
            },
            "max_grad_norm": MAX_GRAD_NORM,
            "dp_config": {
                "name": "fsdp",
                "param_dtype": "float32",
                "reduce_dtype": "float32",
                "wrapping_strategy": "full",
                "_CLASS_": "olmo_core.train.train_module.transformer.config."
                "TransformerDataParallelConfig",
            },
            "_CLASS_": "olmo_core.train.train_module.transformer.config."
            "TransformerTrainModuleConfig",
        },
        "trainer": {
            "save_folder": save_folder,
            "device": "cpu",
            "save_overwrite": True,
            "max_duration": {
                "value": GLOBAL_STEP,
                "unit": "steps",
                "_CLASS_": "olmo_core.train.common.Duration",
            },
            "_CLASS_": "olmo_core.train.config.TrainerConfig",
        },
        "init_seed": 12536,
    }


def olmo_rng_state() -> dict[str, Any]:
    """Return the RNG states OLMo's trainer saves: Python, numpy and torch."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.random.get_rng_state(),
    }


def olmo_train_state(
    world_size: int, checkpoint_dir: str, *, unsharded: bool = False
) -> dict[str, Any]:
    """Return OLMo's trainer state (``train.pt`` or the non-model keys of a rank file)."""
    saved = [PosixPath(checkpoint_dir)]
    return {
        "epoch": 0,
        "global_step": GLOBAL_STEP,
        "global_train_examples_seen_this_epoch": GLOBAL_STEP * GLOBAL_BATCH,
        "global_train_tokens_seen": TOKENS_SEEN,
        "world_size": world_size,
        "checkpoints": [] if unsharded else saved,
        "unsharded_checkpoints": saved if unsharded else [],
        "ephemeral_checkpoints": [],
        "rng": olmo_rng_state(),
    }


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def olmo_core_train_state(world_size: int) -> dict[str, Any]:
    """Return OLMo-core 3's ``train/rank{N}.pt`` content."""
    return {
        "global_step": GLOBAL_STEP,
        "global_train_tokens_seen": TOKENS_SEEN,
        "global_train_petaflops": 3.75e-06,
        "max_steps": GLOBAL_STEP,
        "data_loader": {
            "dataset_fingerprint_version": "v2.0",
            "dataset_fingerprint": "0" * 64,
            "batches_processed": GLOBAL_STEP,
            "tokens_processed": TOKENS_SEEN,
            "seed": 0,
            "epoch": 1,
            "dataset_type": "fsl",
            "sequence_length": SEQUENCE_LENGTH,
            "max_target_sequence_length": None,
        },
        "epoch": 1,
        "world_size": world_size,
        "rng": {
            "python": {"version": tuple(sys.version_info[:2]), "state": random.getstate()},
            "numpy": {"version": _version_tuple(np.__version__), "state": np.random.get_state()},
            "torch": {
                "version": _version_tuple(torch.__version__),
                "state": torch.random.get_rng_state(),
            },
            "cuda": None,
        },
        "callbacks": {"checkpointer": {}, "config_saver": {}},
    }


def scalar_fields(state: dict[str, Any]) -> dict[str, Any]:
    """Return the int, float and str fields of a trainer state (what ``Sample`` records)."""
    return {
        key: value
        for key, value in state.items()
        if isinstance(value, (int, float, str)) and not isinstance(value, bool)
    }
