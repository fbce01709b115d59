"""Group tensor names into a module tree and fold repeated blocks.

``group_tensors`` splits each dotted name into module path parts, then folds the integer-named
children of a module (``blocks.0``, ``blocks.1``, ...) whose subtrees hold the same relative
tensor names, shapes and dtypes into one node, ``blocks.[0-15]``. A folded node keeps one
representative index (the lowest) and lists every index it stands for. Blocks that differ
(alternating layer types in hybrid models) fold into separate nodes, and so do blocks whose
tensors lack data because a shard file is missing. Pure functions: no Textual.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from olmo_inspect.model import TensorInfo
from olmo_inspect.tui.shard_geometry import lacks_data
from olmo_inspect.tui.text import format_indices

# A tensor's layout inside a block: (name relative to the block, shape, dtype, lacks data) for
# each tensor.
Signature = tuple[tuple[str, tuple[int, ...], str, bool], ...]

# Separates the alternatives of a filter; characters that make an alternative a glob pattern.
FILTER_ALTERNATIVES = "|"
GLOB_CHARS = frozenset("*?[")


@dataclass
class TensorGroup:
    """One node of the grouped tensor tree.

    A module node has ``children``; a tensor node has ``tensor`` (and usually no children).
    A folded node sets ``indices``: its subtree shows the tensors of ``indices[0]`` and stands
    for the same tensors at every other index. ``tensor_count``, ``nbytes`` and ``incomplete``
    (tensors whose data is partly in missing files) count every tensor the node stands for,
    folded copies included.
    """

    label: str
    tensor: TensorInfo | None = None
    children: list[TensorGroup] = field(default_factory=list)
    indices: list[int] | None = None
    tensor_count: int = 0
    nbytes: int = 0
    incomplete: int = 0

    @property
    def folded(self) -> bool:
        return self.indices is not None and len(self.indices) > 1

    def iter_tensors(self) -> Iterable[TensorInfo]:
        """Yield the tensors shown under this node (representatives only, in tree order)."""
        if self.tensor is not None:
            yield self.tensor
        for child in self.children:
            yield from child.iter_tensors()


@dataclass
class _Trie:
    """Module path parts of the names, in first-seen order."""

    tensor: TensorInfo | None = None
    lacks_data: bool = False
    children: dict[str, _Trie] = field(default_factory=dict)


def _build_trie(tensors: Iterable[TensorInfo]) -> _Trie:
    root = _Trie()
    for tensor in tensors:
        node = root
        for part in tensor.name.split("."):
            node = node.children.setdefault(part, _Trie())
        node.tensor = tensor
        node.lacks_data = lacks_data(tensor)
    return root


def _signature(node: _Trie, prefix: str = "") -> Signature:
    """Return the relative names, shapes, dtypes and data gaps of every tensor under ``node``."""
    entries: list[tuple[str, tuple[int, ...], str, bool]] = []
    if node.tensor is not None:
        entries.append((prefix, tuple(node.tensor.shape), node.tensor.dtype, node.lacks_data))
    for key, child in node.children.items():
        child_prefix = f"{prefix}.{key}" if prefix else key
        entries.extend(_signature(child, child_prefix))
    return tuple(sorted(entries))


def _is_index(key: str) -> bool:
    # "01" is not an index: int() would make it collide with "1".
    return key.isdigit() and (key == "0" or not key.startswith("0"))


def _convert(label: str, node: _Trie) -> TensorGroup:
    """Convert one trie node and its subtree into a ``TensorGroup``, folding repeated blocks."""
    group = TensorGroup(label=label, tensor=node.tensor)
    if node.tensor is not None:
        group.tensor_count = 1
        group.nbytes = node.tensor.nbytes
        group.incomplete = int(node.lacks_data)

    # Integer-named children fold by signature; a group takes the place of its first index.
    index_groups: dict[Signature, list[int]] = {}
    first_key_of: dict[Signature, str] = {}
    for key, child in node.children.items():
        if _is_index(key) and child.tensor is None:
            signature = _signature(child)
            index_groups.setdefault(signature, []).append(int(key))
            first_key_of.setdefault(signature, key)

    emitted: set[Signature] = set()
    for key, child in node.children.items():
        if not (_is_index(key) and child.tensor is None):
            group.children.append(_convert(key, child))
            continue

        signature = _signature(child)
        if signature in emitted or first_key_of[signature] != key:
            continue
        emitted.add(signature)
        group.children.append(_fold(node, sorted(index_groups[signature])))

    group.tensor_count += sum(child.tensor_count for child in group.children)
    group.nbytes += sum(child.nbytes for child in group.children)
    group.incomplete += sum(child.incomplete for child in group.children)
    return group


def _fold(parent: _Trie, indices: list[int]) -> TensorGroup:
    """Build the node standing for the children of ``parent`` at ``indices`` (same tensors)."""
    representative = _convert(str(indices[0]), parent.children[str(indices[0])])
    if len(indices) == 1:
        return representative

    representative.label = f"[{format_indices(indices)}]"
    representative.indices = indices
    representative.tensor_count *= len(indices)
    representative.nbytes *= len(indices)
    representative.incomplete *= len(indices)
    return representative


def _merge_chains(group: TensorGroup) -> TensorGroup:
    """Join a module with its only child module into one dotted label (``blocks.[0-15]``)."""
    group.children = [_merge_chains(child) for child in group.children]
    if group.tensor is not None or group.indices is not None or len(group.children) != 1:
        return group

    child = group.children[0]
    if child.tensor is not None and not child.children:
        return group

    child.label = f"{group.label}.{child.label}"
    return child


def _glob_matches(parts: list[str], pattern: str) -> bool:
    """Return True when ``pattern`` matches a run of whole dotted ``parts`` of a name."""
    for start in range(len(parts)):
        for end in range(start + 1, len(parts) + 1):
            if fnmatch.fnmatchcase(".".join(parts[start:end]), pattern):
                return True
    return False


def name_matcher(text: str) -> Callable[[str], bool] | None:
    """Build the test a tensor name must pass for the filter ``text``; None when it is empty.

    ``text`` holds alternatives separated by ``|``; a name passes when it matches any of them,
    ignoring case. An alternative with ``*``, ``?`` or ``[`` is a glob pattern that must match
    whole dotted parts of the name (``*norm`` matches ``blocks.0.attn_norm.weight`` and
    ``blocks.1?.*`` matches ``transformer.blocks.12.ff_out.weight``). Any other alternative
    matches as a substring.
    """
    alternatives = [
        part.strip().casefold() for part in text.split(FILTER_ALTERNATIVES) if part.strip()
    ]
    if not alternatives:
        return None

    globs = [part for part in alternatives if GLOB_CHARS.intersection(part)]
    substrings = [part for part in alternatives if not GLOB_CHARS.intersection(part)]

    def matches(name: str) -> bool:
        folded = name.casefold()
        if any(part in folded for part in substrings):
            return True
        if not globs:
            return False
        parts = folded.split(".")
        return any(_glob_matches(parts, pattern) for pattern in globs)

    return matches


def filter_tensors(tensors: Iterable[TensorInfo], text: str) -> list[TensorInfo]:
    """Return the tensors whose name passes the filter ``text``; all when it is empty.

    See ``name_matcher`` for the syntax: ``|`` alternatives, glob patterns or substrings.
    """
    matches = name_matcher(text)
    if matches is None:
        return list(tensors)
    return [tensor for tensor in tensors if matches(tensor.name)]


def group_tensors(tensors: Iterable[TensorInfo]) -> list[TensorGroup]:
    """Group ``tensors`` by module path with repeated blocks folded; return the top-level nodes.

    Args:
        tensors: Tensors in the order the checkpoint lists them. Module order follows the
            first tensor seen in each module; folded blocks sit where their lowest index was.

    Returns:
        The top-level nodes of the tree (``transformer``, ``model``, ``lm_head``, ...).
    """
    root = _convert("", _build_trie(tensors))
    return [_merge_chains(child) for child in root.children]
