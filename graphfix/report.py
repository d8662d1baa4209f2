"""What a conversion did, for the CLI to print and for API callers to inspect."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ConvertedOp:
    """One cuDNN forward op that was replaced."""

    where: str            # "graph" or "function NAME"
    node: str
    op: str               # CudnnRNN | CudnnRNNV2 | CudnnRNNV3
    mode: str
    num_layers: int
    bidirectional: bool
    input_size: int
    num_units: int
    num_proj: int
    input_mode: str
    dtype: str
    time_major: bool
    sequence_lengths: str  # "none" | "constant" | "run time"
    params: str            # "folded to constants" | "sliced in-graph (not constant: ...)"
    gate_order: str = "ifco"  # how the params buffer ordered LSTM gates (graphfix.cudnn.gates)

    def summary(self) -> str:
        direction = "bidirectional" if self.bidirectional else "unidirectional"
        proj = f", num_proj {self.num_proj}" if self.num_proj else ""
        gates = f", gates {self.gate_order}" if self.gate_order != "ifco" else ""
        return (f"{self.op} {self.node!r} ({self.where}): {self.mode}{gates}, {plural(self.num_layers, 'layer')}, "
                f"{direction}, input {self.input_size}, units {self.num_units}{proj}, {self.dtype}, "
                f"{'time-major' if self.time_major else 'batch-major'}, "
                f"sequence lengths: {self.sequence_lengths}, params {self.params}")


@dataclasses.dataclass
class Report:
    """Everything the conversion changed or wants the user to know."""

    source: str = ""
    output: str | None = None
    ops: list[ConvertedOp] = dataclasses.field(default_factory=list)
    helpers: list[str] = dataclasses.field(default_factory=list)   # "CudnnRNNParamsSize 'n' -> Const"
    warnings: list[str] = dataclasses.field(default_factory=list)
    # (function, its cuDNN op types) for uncalled functions kept as they were (they never run)
    left_unchanged: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    removed_nodes: int = 0
    cleared_devices: int = 0
    verification: object = None  # graphfix.tools.verify.Verification, when --verify ran
    interface: list[str] = dataclasses.field(default_factory=list)  # what the output takes and gives (graph.interface)

    @property
    def changed(self) -> bool:
        return bool(self.ops or self.helpers)

    def merge(self, other: "Report") -> None:
        """Add another part's findings (e.g. one MetaGraph of a SavedModel)."""
        self.ops += other.ops
        self.helpers += other.helpers
        self.warnings += other.warnings
        self.left_unchanged += other.left_unchanged
        self.removed_nodes += other.removed_nodes
        self.cleared_devices += other.cleared_devices

    def lines(self) -> list[str]:
        """Human-readable report, one item per line."""
        out = [f"converted {plural(len(self.ops), 'cuDNN RNN op')} in {self.source}"]
        out += [f"  {op.summary()}" for op in self.ops]
        out += [f"  {h}" for h in self.helpers]
        if self.removed_nodes:
            out.append(f"  removed {plural(self.removed_nodes, 'node')} that only built the old params buffers")
        if self.cleared_devices:
            out.append(f"  cleared the GPU device placement of {plural(self.cleared_devices, 'node')}")
        if self.left_unchanged:
            out.append(f"  left {plural(len(self.left_unchanged), 'function')} with cuDNN ops as they were: nothing in the "
                       "model calls them, so they never run (tf_keras keeps GPU variants and gradients so):")
            by_ops: dict[str, list[str]] = {}
            for function, ops in self.left_unchanged:
                by_ops.setdefault(ops, []).append(function)
            for ops, functions in by_ops.items():
                shown = ", ".join(functions[:2]) + (f" and {len(functions) - 2} more" if len(functions) > 2 else "")
                out.append(f"    {len(functions)} holding {ops}: {shown}")
        out += [f"warning: {w}" for w in self.warnings]
        if self.verification is not None:
            out += self.verification.lines()
        out += [f"  {line}" for line in self.interface]
        if self.output:
            out.append(f"wrote {self.output}")
        return out


def plural(count: int, word: str) -> str:
    """plural(1, "layer") -> "1 layer"; plural(3, "op") -> "3 ops"."""
    return f"{count} {word}{'' if count == 1 else 's'}"
