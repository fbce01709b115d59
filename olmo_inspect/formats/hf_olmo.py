"""Reader for checkpoints of the ``hf_olmo`` package (``hf-olmo``).

``config.json`` has ``model_type: hf_olmo`` and the OLMo model fields; the weights, usually
``pytorch_model.bin``, keep OLMo's names under ``model.transformer.*``.
"""

from __future__ import annotations

from olmo_inspect.detect import Detection
from olmo_inspect.formats.common import checkpoint_from_detection, list_checkpoint_files
from olmo_inspect.formats.transformers import read_weights, roles_for
from olmo_inspect.model import Checkpoint, CheckpointKind

HF_OLMO_PREFIX = "model.transformer."


def read(detection: Detection, *, deep: bool = False) -> Checkpoint:
    """Read an hf_olmo checkpoint directory as metadata."""
    root = detection.path
    checkpoint = checkpoint_from_detection(detection, CheckpointKind.HF_OLMO)
    weights = read_weights(checkpoint, root)

    unexpected = [t.name for t in checkpoint.tensors if not t.name.startswith(HF_OLMO_PREFIX)]
    if unexpected:
        checkpoint.notes.append(
            f"{len(unexpected)} tensor(s) outside {HF_OLMO_PREFIX}*: {', '.join(unexpected[:5])}"
        )
    checkpoint.files = list_checkpoint_files(root, roles_for(root, weights))
    for info in checkpoint.files:
        if info.role == "model":
            info.tensors = sum(1 for tensor in checkpoint.tensors if tensor.file == info.path)
    return checkpoint
