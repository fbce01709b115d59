"""The tensor tree: model and optimizer tensors grouped by module, repeated blocks folded."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from olmo_inspect.model import TensorInfo
from olmo_inspect.tui.messages import TensorHighlighted
from olmo_inspect.tui.tensor_groups import TensorGroup, filter_tensors, group_tensors
from olmo_inspect.tui.text import (
    format_bytes,
    format_indices,
    format_shape,
    join_styled,
    safe_text,
)

# With a filter, every node is expanded so the matches show. A tree with more nodes than this
# expands only its sections and their top-level modules.
MAX_EXPANDED_NODES = 2000

MODEL_SECTION = "Model"
OPTIMIZER_SECTION = "Optimizer"

# Marks a tensor, or counts the tensors under a module, whose data is partly in missing files.
MISSING_MARK = "✘ missing"
MISSING_STYLE = "bold red"

TreeData = TensorGroup | None

# A node's place in the tree: the section title, then the group labels down to the node.
NodeKey = tuple[str, ...]


def _count_label(count: int, nbytes: int, total: int | None = None) -> str:
    """Format ``4 tensors, 32.0 KiB``, or ``4 of 9 tensors, 32.0 KiB`` when filtered."""
    noun = "tensor" if (total if total is not None else count) == 1 else "tensors"
    shown = f"{count:,}" if total is None else f"{count:,} of {total:,}"
    return f"{shown} {noun}, {format_bytes(nbytes)}"


def _missing_label(incomplete: int, tensor_count: int) -> str:
    if tensor_count == 1:
        return MISSING_MARK
    return f"{MISSING_MARK}: {incomplete:,}"


def group_label(group: TensorGroup) -> Text:
    """Build a node label: a tensor's shape, dtype and size, or a module's totals.

    A tensor whose data is partly in missing files ends with a red "✘ missing"; a module ends
    with how many of its tensors are so.
    """
    name = (safe_text(group.label) or '""', "bold" if group.children else "")
    parts = [name]
    if group.tensor is not None:
        tensor = group.tensor
        parts += [
            (format_shape(tensor.shape), "cyan"),
            (safe_text(tensor.dtype), "magenta"),
            (format_bytes(tensor.nbytes), "dim"),
        ]
    else:
        parts.append((_count_label(group.tensor_count, group.nbytes), "dim"))

    if group.incomplete:
        parts.append((_missing_label(group.incomplete, group.tensor_count), MISSING_STYLE))
    return join_styled(*parts)


def _is_expanded(key: NodeKey, expanded: set[NodeKey] | None, *, default: bool) -> bool:
    """Return whether the node with ``key`` starts expanded: as saved, else ``default``."""
    if expanded is None:
        return default
    return key in expanded


def _count_nodes(groups: Sequence[TensorGroup]) -> int:
    return sum(1 + _count_nodes(group.children) for group in groups)


class TensorTree(Tree[TreeData]):
    """Model tensors and optimizer tensors as two branches of one tree.

    Moving the cursor onto a tensor posts ``TensorHighlighted``. ``apply_filter`` rebuilds the
    tree from the tensors whose names pass the filter. Clearing the filter brings back the
    expanded nodes and the cursor position from before the filter was typed.
    """

    def __init__(
        self,
        tensors: Sequence[TensorInfo],
        optimizer_tensors: Sequence[TensorInfo] = (),
        *,
        id: str | None = None,
    ) -> None:
        super().__init__("tensors", id=id)
        self.show_root = False
        self.guide_depth = 3
        self._tensors = list(tensors)
        self._optimizer_tensors = list(optimizer_tensors)
        self.filter_text = ""
        self._node_keys: dict[int, NodeKey] = {}
        # Expanded nodes and cursor node from before the filter, brought back when it clears.
        self._saved_expanded: set[NodeKey] | None = None
        self._saved_cursor: NodeKey | None = None
        self._rebuild()

    def apply_filter(self, text: str) -> None:
        """Show the tensors whose name passes the filter ``text``, or all for "".

        See ``tensor_groups.name_matcher`` for the syntax. With a non-empty filter the cursor
        moves to the first matching tensor; an emptied filter restores the expansion state and
        cursor from before filtering.
        """
        was_filtering = bool(self.filter_text.strip())
        filtering = bool(text.strip())
        if filtering and not was_filtering:
            self._saved_expanded = self.expanded_keys()
            cursor = self.cursor_node
            self._saved_cursor = None if cursor is None else self._node_keys.get(cursor.id)

        self.filter_text = text
        if filtering or self._saved_expanded is None:
            self._rebuild()
            if filtering:
                self.move_cursor_to_first_tensor()
            return

        expanded, cursor_key = self._saved_expanded, self._saved_cursor
        self._saved_expanded = self._saved_cursor = None
        self._rebuild(expanded=expanded)
        self._restore_cursor(cursor_key)

    def expanded_keys(self) -> set[NodeKey]:
        """Return the keys (section title, then group labels) of every expanded node."""
        return {
            self._node_keys[node.id]
            for node in self.iter_nodes()
            if node.is_expanded and node.id in self._node_keys
        }

    def _restore_cursor(self, key: NodeKey | None) -> None:
        """Put the cursor back on the node with ``key``, or on the first tensor without one."""
        for node in self.iter_nodes():
            if key is not None and self._node_keys.get(node.id) == key:
                self.call_after_refresh(self._move_and_announce, node)
                return
        self.move_cursor_to_first_tensor()

    def move_cursor_to_first_tensor(self) -> None:
        """Expand the way to the first tensor, if there is one, and put the cursor on it."""
        for node in self.iter_nodes():
            if isinstance(node.data, TensorGroup) and node.data.tensor is not None:
                parent = node.parent
                while parent is not None:
                    parent.expand()
                    parent = parent.parent
                # The node gets its line number when the tree next lays out its lines.
                self.call_after_refresh(self._move_and_announce, node)
                return

    def _move_and_announce(self, node: TreeNode[TreeData]) -> None:
        """Move the cursor to ``node`` and post ``TensorHighlighted`` for it.

        The tree posts ``NodeHighlighted`` only when the cursor line changes, and after a
        rebuild the first match can sit on the line the cursor was already on.
        """
        self.move_cursor(node)
        group = node.data
        if isinstance(group, TensorGroup) and group.tensor is not None:
            self.post_message(TensorHighlighted(group.tensor, self._folded_indices(node)))

    def iter_nodes(self, node: TreeNode[TreeData] | None = None) -> Iterator[TreeNode[TreeData]]:
        """Yield every node below ``node`` (default: the root) in display order."""
        start = self.root if node is None else node
        for child in start.children:
            yield child
            yield from self.iter_nodes(child)

    def shown_tensors(self) -> list[TensorInfo]:
        """Return the tensors in the tree now (folded blocks by their representative only)."""
        return [
            node.data.tensor
            for node in self.iter_nodes()
            if isinstance(node.data, TensorGroup) and node.data.tensor is not None
        ]

    def _rebuild(self, expanded: set[NodeKey] | None = None) -> None:
        """Fill the tree for the current filter; ``expanded`` picks the nodes to expand."""
        self.clear()
        self._node_keys = {}
        filtering = bool(self.filter_text.strip())

        model_groups = group_tensors(filter_tensors(self._tensors, self.filter_text))
        optimizer_groups = group_tensors(filter_tensors(self._optimizer_tensors, self.filter_text))
        expand_all = filtering and (
            _count_nodes(model_groups) + _count_nodes(optimizer_groups) <= MAX_EXPANDED_NODES
        )

        sections = [(MODEL_SECTION, self._tensors, model_groups)]
        if self._optimizer_tensors:
            sections.append((OPTIMIZER_SECTION, self._optimizer_tensors, optimizer_groups))

        for title, tensors, groups in sections:
            shown = sum(group.tensor_count for group in groups)
            nbytes = sum(group.nbytes for group in groups)
            count = _count_label(shown, nbytes, len(tensors) if filtering else None)
            parts = [(title, "bold"), (count, "dim")]
            incomplete = sum(group.incomplete for group in groups)
            if incomplete:
                parts.append((_missing_label(incomplete, shown), MISSING_STYLE))
            label = join_styled(*parts)

            # The optimizer branch starts folded: it repeats the model's names two or three times.
            key: NodeKey = (title,)
            expand_section = _is_expanded(
                key, expanded, default=title == MODEL_SECTION or filtering
            )
            section = self.root.add(label, data=None, expand=expand_section)
            self._node_keys[section.id] = key
            if not groups:
                section.add_leaf(Text("no tensors match the filter", style="dim italic"))
            for group in groups:
                self._add_group(
                    section, group, key, depth=0, expand_all=expand_all, expanded=expanded
                )

    def _add_group(
        self,
        parent: TreeNode[TreeData],
        group: TensorGroup,
        parent_key: NodeKey,
        *,
        depth: int,
        expand_all: bool,
        expanded: set[NodeKey] | None,
    ) -> None:
        key = (*parent_key, group.label)
        if not group.children:
            leaf = parent.add_leaf(group_label(group), data=group)
            self._node_keys[leaf.id] = key
            return

        expand = _is_expanded(key, expanded, default=expand_all or depth == 0)
        node = parent.add(group_label(group), data=group, expand=expand)
        self._node_keys[node.id] = key
        if group.folded and group.indices is not None:
            indices = format_indices(group.indices)
            note = Text(
                f"{len(group.indices)} blocks with the same tensors: {indices}; "
                f"showing block {group.indices[0]}",
                style="dim italic",
            )
            node.add_leaf(note, data=None)

        for child in group.children:
            self._add_group(
                node, child, key, depth=depth + 1, expand_all=expand_all, expanded=expanded
            )

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[TreeData]) -> None:
        """Post ``TensorHighlighted`` when the cursor lands on a tensor."""
        group = event.node.data
        if not isinstance(group, TensorGroup) or group.tensor is None:
            return

        self.post_message(TensorHighlighted(group.tensor, self._folded_indices(event.node)))

    @staticmethod
    def _folded_indices(node: TreeNode[TreeData]) -> list[int] | None:
        """Return the indices of the nearest folded ancestor of ``node``, if any."""
        current: TreeNode[TreeData] | None = node.parent
        while current is not None:
            if isinstance(current.data, TensorGroup) and current.data.folded:
                return current.data.indices
            current = current.parent
        return None
