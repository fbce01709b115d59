"""Hand-built checkpoint records for the TUI tests, shaped like OLMo 1B checkpoints.

The records are what a reader would build; the tests compare what the app shows against the
values these builders put in. Paths are fixed strings so snapshots stay stable.
"""

from __future__ import annotations

from pathlib import Path

from olmo_inspect.model import (
    Checkpoint,
    CheckpointKind,
    FileInfo,
    OptimizerInfo,
    RunEntry,
    RunFolder,
    ShardPiece,
    StoredBytes,
    Summary,
    TensorInfo,
    TrainState,
    dtype_size,
)

# OLMo 1B: 16 blocks, d_model 2048, MLP hidden 16384 (up|gate fused), vocab padded to 50304.
LAYERS = 16
D_MODEL = 2048
MLP_HIDDEN = 16384
VOCAB = 50304
DTYPE = "float32"

UNSHARDED_PATH = Path("/data/olmo-1b/step20000-unsharded")
SHARDED_PATH = Path("/data/olmo-1b/step20000")

CONFIG_YAML = f"""run_name: OLMo-1B
seed: 6198
model:
  d_model: {D_MODEL}
  n_heads: 16
  n_layers: {LAYERS}
  mlp_ratio: 8
  weight_tying: true
  alibi: false
  rope: true
  block_type: sequential
  embedding_size: {VOCAB}
  vocab_size: 50280
  max_sequence_length: 2048
sharded_checkpointer: torch_legacy
"""


def block_shapes() -> dict[str, tuple[int, ...]]:
    """Return the tensors of one OLMo 1B block, relative to the block."""
    return {
        "att_proj.weight": (3 * D_MODEL, D_MODEL),
        "attn_out.weight": (D_MODEL, D_MODEL),
        "ff_proj.weight": (MLP_HIDDEN, D_MODEL),
        "ff_out.weight": (D_MODEL, MLP_HIDDEN // 2),
    }


def model_shapes() -> dict[str, tuple[int, ...]]:
    """Return every model tensor of OLMo 1B in state-dict order (weights tied: no ff_out)."""
    shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (VOCAB, D_MODEL)}
    for index in range(LAYERS):
        for name, shape in block_shapes().items():
            shapes[f"transformer.blocks.{index}.{name}"] = shape
    return shapes


def _train_state(file: str) -> TrainState:
    return TrainState(
        file=file,
        step=20000,
        tokens_seen=83_886_080_000,
        fields={"epoch": 0, "world_size": 2, "global_train_examples_seen_this_epoch": 40_960_000},
    )


def summary_of(tensors: list[TensorInfo]) -> Summary:
    """Build the summary a summarizer would give for OLMo 1B with these tensors."""
    return Summary(
        parameters=sum(tensor.numel for tensor in tensors),
        bytes=sum(tensor.nbytes for tensor in tensors),
        bytes_per_dtype={DTYPE: sum(tensor.nbytes for tensor in tensors)},
        layers=LAYERS,
        d_model=D_MODEL,
        n_heads=16,
        n_kv_heads=16,
        head_dim=D_MODEL // 16,
        mlp_hidden_size=MLP_HIDDEN,
        vocab_size=50280,
        embedding_size=VOCAB,
        context_length=2048,
        weight_tying=True,
        activation="swiglu",
        norm="layer_norm (non-parametric)",
        generation="OLMo 1",
    )


def unsharded_checkpoint() -> Checkpoint:
    """Build an OLMo 1B ``olmo-unsharded`` checkpoint with byte offsets in ``model.pt``."""
    tensors: list[TensorInfo] = []
    offset = 0
    for index, (name, shape) in enumerate(model_shapes().items()):
        tensor = TensorInfo(
            name=name,
            shape=shape,
            dtype=DTYPE,
            file="model.pt",
            data=StoredBytes(
                file="model.pt",
                key=f"model/data/{index}",
                dtype=DTYPE,
                data_start=offset + 64,
                storage_nbytes=0,
            ),
        )
        tensors.append(tensor)
        offset += tensor.nbytes + 64

    optimizer_tensors = [
        TensorInfo(name=f"{tensor.name}.{state}", shape=tensor.shape, dtype=DTYPE, file="optim.pt")
        for tensor in tensors[:3]
        for state in ("exp_avg", "exp_avg_sq")
    ]
    model_bytes = offset + 4096
    return Checkpoint(
        path=UNSHARDED_PATH,
        kind=CheckpointKind.OLMO_UNSHARDED,
        tensors=tensors,
        evidence=["config.yaml and model.pt at the top level", "model.pt keys have no prefix"],
        notes=["optim.pt lists state for 3 of 65 parameters in this test record"],
        config={"model": {"d_model": D_MODEL, "n_layers": LAYERS}},
        config_file="config.yaml",
        config_text=CONFIG_YAML,
        train_state=_train_state("train.pt"),
        optimizer=OptimizerInfo(
            kind="AdamW",
            param_groups=[{"lr": 0.0004, "weight_decay": 0.1}],
            state_keys=["exp_avg", "exp_avg_sq", "step"],
            tensors=optimizer_tensors,
            files=["optim.pt"],
        ),
        files=[
            FileInfo(path="config.yaml", bytes=len(CONFIG_YAML), role="config"),
            FileInfo(path="model.pt", bytes=model_bytes, role="model", tensors=len(tensors)),
            FileInfo(path="optim.pt", bytes=123_456, role="optimizer", tensors=6),
            FileInfo(path="train.pt", bytes=2_345, role="trainer state"),
        ],
    )


def unsharded_summary() -> Summary:
    """Build the summary that matches ``unsharded_checkpoint``."""
    return summary_of(unsharded_checkpoint().tensors)


def sharded_checkpoint(world_size: int = 2, missing_rank: int | None = None) -> Checkpoint:
    """Build an OLMo 1B ``olmo-sharded-torch-legacy`` checkpoint split by rows over ranks.

    Each tensor's rows are cut into ``world_size`` equal pieces, rank r holding piece r in
    ``rank{r}.pt``. With ``missing_rank`` set, that rank's pieces and file are marked missing
    and a problem names the missing file, as a reader reports it.
    """
    ranks = [rank for rank in range(world_size) if rank != missing_rank]
    tensors: list[TensorInfo] = []
    rank_bytes = dict.fromkeys(ranks, 0)
    rank_tensors = dict.fromkeys(ranks, 0)
    for name, shape in model_shapes().items():
        rows = shape[0] // world_size
        pieces: list[ShardPiece] = []
        if missing_rank is not None:
            pieces.append(
                ShardPiece(
                    rank=missing_rank,
                    file=f"rank{missing_rank}.pt",
                    key=None,
                    numel=rows * shape[1],
                    offsets=(missing_rank * rows, 0),
                    shape=(rows, shape[1]),
                    missing=True,
                )
            )
        for rank in ranks:
            numel = rows * shape[1]
            start = rank_bytes[rank]
            nbytes = numel * dtype_size(DTYPE)
            pieces.append(
                ShardPiece(
                    rank=rank,
                    file=f"rank{rank}.pt",
                    key=f"model.{name}",
                    numel=numel,
                    offsets=(rank * rows, 0),
                    shape=(rows, shape[1]),
                    byte_range=(start, start + nbytes),
                )
            )
            rank_bytes[rank] += nbytes
            rank_tensors[rank] += 1
        pieces.sort(key=lambda piece: piece.rank)
        tensors.append(TensorInfo(name=name, shape=shape, dtype=DTYPE, file=None, shards=pieces))

    problems = []
    if missing_rank is not None:
        problems.append(f"rank{missing_rank}.pt is missing: the checkpoint has {world_size} ranks")

    files = [FileInfo(path="config.yaml", bytes=len(CONFIG_YAML), role="config")]
    files += [
        FileInfo(
            path=f"rank{rank}.pt",
            bytes=rank_bytes[rank] + 1000 * (rank + 1),
            role="model+optim+train",
            rank=rank,
            tensors=rank_tensors[rank],
        )
        for rank in ranks
    ]
    if missing_rank is not None:
        files.append(
            FileInfo(
                path=f"rank{missing_rank}.pt",
                bytes=0,
                role="missing",
                rank=missing_rank,
                missing=True,
            )
        )
    return Checkpoint(
        path=SHARDED_PATH,
        kind=CheckpointKind.OLMO_SHARDED_TORCH_LEGACY,
        tensors=tensors,
        problems=problems,
        evidence=["config.yaml and rank{N}.pt at the top level"],
        config_file="config.yaml",
        config_text=CONFIG_YAML,
        train_state=_train_state("rank0.pt"),
        files=files,
        world_size=world_size,
    )


def flat_sharded_checkpoint() -> Checkpoint:
    """Build an ``olmo-sharded-local`` record whose pieces are flat ranges, with a gap.

    ``w.weight`` (128 x 64 = 8192 elements) has rank 0 at [0, 4096) and rank 1 at
    [4096, 6160): elements [6160, 8192) are in no piece. ``b.weight`` is covered.
    """
    gap = TensorInfo(
        name="w.weight",
        shape=(128, 64),
        dtype=DTYPE,
        file=None,
        shards=[
            ShardPiece(rank=0, file="model/rank0.pt", key="flat", numel=4096, flat_range=(0, 4096)),
            ShardPiece(
                rank=1, file="model/rank1.pt", key="flat", numel=2064, flat_range=(4096, 6160)
            ),
        ],
    )
    whole = TensorInfo(
        name="b.weight",
        shape=(64,),
        dtype=DTYPE,
        file=None,
        shards=[
            ShardPiece(rank=0, file="model/rank0.pt", key="flat", numel=32, flat_range=(0, 32)),
            ShardPiece(rank=1, file="model/rank1.pt", key="flat", numel=32, flat_range=(32, 64)),
        ],
    )
    return Checkpoint(
        path=Path("/data/tiny-local/step3"),
        kind=CheckpointKind.OLMO_SHARDED_LOCAL,
        tensors=[gap, whole],
        problems=["w.weight: elements [6160, 8192) are in no rank's flat parameter"],
        files=[
            FileInfo(path="model/rank0.pt", bytes=20_000, role="model", rank=0, tensors=2),
            FileInfo(path="model/rank1.pt", bytes=10_000, role="model", rank=1, tensors=2),
        ],
        world_size=2,
    )


HOSTILE_TENSOR = "[red]x\x1b[2J.weight"
HOSTILE_FILE = "model\x1b]0;pwned\x07.pt"
HOSTILE_PROBLEM = "[bold]rank1.pt[/bold] is \x1b[31mmissing\r"
HOSTILE_CONFIG = "name: '[link=http://example.invalid]click[/link]'\nescape: \"\x1b[2J\"\n"


def hostile_checkpoint() -> Checkpoint:
    """Build a checkpoint whose names, files, config and problems hold markup and escapes."""
    return Checkpoint(
        path=Path("/data/hostile/[blink]step1"),
        kind=CheckpointKind.OLMO_UNSHARDED,
        tensors=[TensorInfo(name=HOSTILE_TENSOR, shape=(4, 4), dtype=DTYPE, file=HOSTILE_FILE)],
        problems=[HOSTILE_PROBLEM],
        config_file="config.yaml",
        config_text=HOSTILE_CONFIG,
        files=[FileInfo(path=HOSTILE_FILE, bytes=64, role="model", tensors=1)],
    )


def run_folder() -> RunFolder:
    """Build a run folder with an unsharded and a sharded checkpoint, the sharded one latest."""
    unsharded = unsharded_checkpoint()
    sharded = sharded_checkpoint()
    return RunFolder(
        path=Path("/data/olmo-1b"),
        checkpoints=[
            RunEntry(
                path=UNSHARDED_PATH,
                step=20000,
                kind=unsharded.kind,
                bytes=unsharded.files_bytes,
                complete=True,
                latest=False,
            ),
            RunEntry(
                path=SHARDED_PATH,
                step=20000,
                kind=sharded.kind,
                bytes=sharded.files_bytes,
                complete=True,
                latest=True,
            ),
        ],
    )
