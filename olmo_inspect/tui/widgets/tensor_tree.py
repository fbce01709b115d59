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

TreeData = TensorGroup | None


def _count_label(count: int, nbytes: int) -> str:
    noun = "tensor" if count == 1 else "tensors"
    return f"{count:,} {noun}, {format_bytes(nbytes)}"


def group_label(group: TensorGroup) -> Text:
    """Build a node label: a tensor's shape, dtype and size, or a module's totals."""
    name = (safe_text(group.label) or '""', "bold" if group.children else "")
    if group.tensor is not None:
        tensor = group.tensor
        return join_styled(
            name,
            (format_shape(tensor.shape), "cyan"),
            (safe_text(tensor.dtype), "magenta"),
            (format_bytes(tensor.nbytes), "dim"),
        )

    return join_styled(name, (_count_label(group.tensor_count, group.nbytes), "dim"))


def _count_nodes(groups: Sequence[TensorGroup]) -> int:
    return sum(1 + _count_nodes(group.children) for group in groups)


class TensorTree(Tree[TreeData]):
    """Model tensors and optimizer tensors as two branches of one tree.

    Moving the cursor onto a tensor posts ``TensorHighlighted``. ``apply_filter`` rebuilds the
    tree from the tensors whose names contain the text.
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
        self._rebuild()

    def apply_filter(self, text: str) -> None:
        """Show the tensors whose name contains ``text`` (case-insensitive), or all for "".

        With a non-empty filter the cursor moves to the first matching tensor.
        """
        self.filter_text = text
        self._rebuild()
        if text.strip():
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

    def _rebuild(self) -> None:
        self.clear()
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
            count = _count_label(shown, nbytes)
            if filtering:
                count = f"{count} of {len(tensors):,}"
            label = join_styled((title, "bold"), (count, "dim"))

            # The optimizer branch starts folded: it repeats the model's names two or three times.
            expand_section = title == MODEL_SECTION or filtering
            section = self.root.add(label, data=None, expand=expand_section)
            if not groups:
                section.add_leaf(Text("no tensors match the filter", style="dim italic"))
            for group in groups:
                self._add_group(section, group, depth=0, expand_all=expand_all)

    def _add_group(
        self, parent: TreeNode[TreeData], group: TensorGroup, *, depth: int, expand_all: bool
    ) -> None:
        if not group.children:
            parent.add_leaf(group_label(group), data=group)
            return

        expand = expand_all or depth == 0
        node = parent.add(group_label(group), data=group, expand=expand)
        if group.folded and group.indices is not None:
            indices = format_indices(group.indices)
            note = Text(
                f"{len(group.indices)} blocks with the same tensors: {indices}; "
                f"showing block {group.indices[0]}",
                style="dim italic",
            )
            node.add_leaf(note, data=None)

        for child in group.children:
            self._add_group(node, child, depth=depth + 1, expand_all=expand_all)

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
