r"""A cell's step, traced once into three graphs of torch operations: the forward step, the serial part
of its backward, and the part of the backward that can wait until the end of the sequence.

The step ``s_t = step(θ, p_t, s_{t-1})`` and its vector–Jacobian product are traced together
(``torch.func.vjp`` under ``make_fx`` with fake tensors: no number is computed, and a step whose
control flow depends on values cannot be traced, which is reported rather than baked in). The joint
graph is then cut in three:

- **forward**: the nodes that do not depend on the incoming adjoint; it returns ``s_t`` and the
  values the backward reads (*saved*);
- **serial**: what the adjoint of ``s_{t-1}`` needs, the only part of BPTT that must run one step
  after another; it returns ``∂s_{t-1}`` and the values the rest reads (*stash*);
- **deferred**: the rest, the parameters' gradients and ``∂p_t``. It depends on no other step, so
  it runs once over all steps at the end, its inputs stacked along the batch dimension: the
  parameters' gradients, sums over rows, become one large GEMM instead of one small one per step.
  Stacking is valid only for a step that treats the rows of the batch independently; a check on
  random inputs at trace time decides, and the deferred graph otherwise runs once per step.

Each graph is a ``torch.fx.GraphModule`` of aten operations (the torch twin, any device and dtype);
:mod:`.lowering` turns it into NumPy code for the CPU.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, fx
from torch.fx.experimental.proxy_tensor import make_fx
from torch.func import functional_call, functionalize, vjp

__all__ = ["StepGraphs", "trace_step", "NotTraceable"]


class NotTraceable(Exception):
    """The step could not be traced into a graph; the message says why (one line)."""


class StepGraphs(NamedTuple):
    """The three graphs of a traced step and how their inputs and outputs line up.

    ``forward(*params, p, *states) -> (*new_states, *saved)``;
    ``serial(*params, *serial_inputs, *d_new_states) -> (*d_states, *stash)`` where ``serial_inputs``
    are ``saved[i] for i in serial_saved`` and the states ``s_{t-1}`` where ``serial_states``;
    ``deferred(*params, *deferred_inputs) -> (*d_params, d_p)`` with ``deferred_inputs`` the
    ``stash`` then ``saved[i] for i in deferred_saved``, then ``p`` and the states listed in
    ``deferred_rows``.
    """
    forward: fx.GraphModule
    serial: fx.GraphModule
    deferred: fx.GraphModule
    n_params: int
    n_states: int
    serial_saved: tuple            # indices into saved
    serial_states: tuple           # which of s_{t-1} the serial graph reads
    deferred_saved: tuple          # indices into saved
    deferred_rows: tuple           # ("p",) and/or state indices the deferred graph reads
    n_stash: int
    stacked: bool                  # the deferred graph may run once on rows stacked over time
    params_used: tuple             # which params reach the state at all (others get no gradient)


def _mutates(node: fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return schema is not None and schema.is_mutable


def _joint_fn(module, names: list, n_states: int):
    def step(params, consts, p, states):
        new = functional_call(module, dict(zip(names, params)),
                              (p, states[0] if n_states == 1 else tuple(states), *consts), strict=False)
        return (new,) if isinstance(new, Tensor) else tuple(new)

    def joint(params, consts, p, states, d_new):
        # consts (a run's dropout mask) are inputs of the step, fixed over the run, not differentiated
        new, pullback = vjp(lambda params, p, states: step(params, consts, p, states), params, p, states)
        d_params, d_p, d_states = pullback(tuple(d_new))
        return (*new, *d_params, d_p, *d_states)

    return joint


def _explain(error: Exception) -> str:
    """What the tracer's refusal means for the cell's author, in one line."""
    text = (str(error).strip().splitlines() or [""])[0]
    kind = type(error).__name__
    if "DataDependent" in kind or "data-dependent" in text:
        return f"its control flow depends on a tensor's value ({kind}); write it with torch.where"
    if "in-place" in text:
        return f"it updates an input in place ({text.rstrip('.')}); write the update out of place"
    return f"{kind}: {text}"[:300]


def _ancestors(outputs, stop=lambda n: False) -> set:
    seen, work = set(), [n for n in outputs if isinstance(n, fx.Node)]
    while work:
        n = work.pop()
        if n in seen:
            continue
        seen.add(n)
        if not stop(n):
            work.extend(a for a in n.all_input_nodes)
    return seen


def _subgraph(nodes_in_order, inputs: list, outputs: list) -> fx.GraphModule:
    """A graph computing ``outputs`` from ``inputs`` (placeholders) with the given nodes."""
    g = fx.Graph()
    env = {}
    for i, n in enumerate(inputs):
        env[n] = g.placeholder(f"in{i}")
        env[n].meta.update(n.meta)
    for n in nodes_in_order:
        if n in env:
            continue
        env[n] = g.node_copy(n, lambda a: env[a])
    g.output(tuple(env[n] if isinstance(n, fx.Node) else n for n in outputs))
    g.eliminate_dead_code()
    return fx.GraphModule(torch.nn.Module(), g)


def trace_step(module, names: list, params: list, p: Tensor, states: list, consts: list = ()) -> StepGraphs:
    """Trace ``module(p, state, *consts)`` (the cell's step as a module whose parameters and buffers are
    named ``names``, given as ``params``) at the shapes of ``p`` and ``states``; raises
    :class:`NotTraceable`. In the graphs the ``consts`` follow the parameters (their gradient: None)."""
    n_grads, n_params, n_states = len(params), len(params) + len(consts), len(states)
    joint = _joint_fn(module, names, n_states)
    d_new = [torch.empty_like(s) for s in states]
    try:
        # functionalized: an in-place update of an intermediate becomes an out-of-place one; an update of
        # an input stays visible (a copy_ into it) and is refused below
        gm = make_fx(functionalize(joint), tracing_mode="fake")(list(params), list(consts), p, list(states), d_new)
    except Exception as error:                          # anything the tracer refuses, in one line
        raise NotTraceable(_explain(error)) from None
    graph = gm.graph
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    for n in nodes:
        if n.op == "call_function" and _mutates(n):
            raise NotTraceable(f"the step updates a tensor in place ({n.target}); write it out of place")
        if n.op == "get_attr":
            raise NotTraceable("the step reads a tensor that is neither a parameter, a buffer nor an input "
                               f"({n.target}); register it as a buffer")
    P = placeholders[:n_params]
    p_node = placeholders[n_params]
    S = placeholders[n_params + 1:n_params + 1 + n_states]
    D = placeholders[n_params + 1 + n_states:]
    (out_node,) = [n for n in nodes if n.op == "output"]
    outs = list(out_node.args[0])
    new_states = outs[:n_states]
    d_params = outs[n_states:n_states + n_grads] + [None] * (n_params - n_grads)
    d_p = outs[n_states + n_grads]
    d_states = outs[n_states + n_grads + 1:]
    if any(not isinstance(n, fx.Node) for n in new_states):
        raise NotTraceable("the step returns a state that is not computed from its inputs")
    order = {n: i for i, n in enumerate(nodes)}
    backward_side = _ancestors_of_users(D)                       # nodes that depend on an adjoint
    forward_nodes = [n for n in nodes if n.op == "call_function" and n not in backward_side]
    # the state's adjoint may come back as a zero tensor (a state component the step does not read)
    serial_nodes = _ancestors(d_states, stop=lambda n: n not in backward_side)
    serial_needed = [n for n in serial_nodes if n in backward_side and n.op == "call_function"]
    # a parameter the state does not depend on gets no gradient (None) rather than a zero tensor
    d_params = [n if isinstance(n, fx.Node) and set(D) & _ancestors([n]) else None for n in d_params]
    d_p = d_p if isinstance(d_p, fx.Node) and set(D) & _ancestors([d_p]) else None
    deferred_targets = [n for n in (*d_params, d_p) if n is not None]
    deferred_all = _ancestors(deferred_targets, stop=lambda n: n not in backward_side or n in serial_nodes)
    deferred_nodes = [n for n in deferred_all if n in backward_side and n not in serial_nodes
                      and n.op == "call_function"]
    forward_set = set(forward_nodes)
    # forward values computed from the parameters alone (a transposed weight): recomputed by whichever
    # graph reads them, never saved per step
    param_only = {n for n in forward_nodes if _ancestors([n]) & set(placeholders) <= set(P)}

    def inputs_of(group: set) -> list:
        """What ``group`` reads from outside itself; parameter-only values are pulled into it."""
        found, work = [], sorted(group, key=order.get)
        while work:
            n = work.pop(0)
            for a in n.all_input_nodes:
                if a in param_only and a not in group:
                    group.add(a)
                    work.append(a)
                elif a not in group and a not in found:
                    found.append(a)
        return [a for a in found if a not in group]

    serial_group = set(serial_needed)
    serial_inputs = [a for a in inputs_of(serial_group) if a not in P]
    # outputs that are adjoint placeholders or forward values pass straight through
    for n in d_states:
        if isinstance(n, fx.Node) and n not in serial_group and n not in serial_inputs and n not in P:
            serial_inputs.append(n)
    deferred_group = set(deferred_nodes)
    deferred_inputs = [a for a in inputs_of(deferred_group) if a not in P]
    for n in deferred_targets:
        if n not in deferred_group and n not in deferred_inputs and n not in P:
            deferred_inputs.append(n)
    # the forward's saved values: forward nodes (or the states / p) the backward graphs read
    saved = [n for n in forward_nodes if (n in serial_inputs or n in deferred_inputs) and n not in param_only]
    serial_saved = tuple(saved.index(n) for n in serial_inputs if n in saved)
    serial_states = tuple(S.index(n) for n in serial_inputs if n in S)
    if any(n is p_node for n in serial_inputs):
        saved.append(p_node)                                         # p itself, as a saved value
        serial_saved = serial_saved + (len(saved) - 1,)
    stash = [n for n in deferred_inputs if n in serial_group or n in D]
    deferred_saved = tuple(saved.index(n) if n in saved else _append(saved, n)
                           for n in deferred_inputs if n in forward_set)
    deferred_rows = tuple("p" if n is p_node else S.index(n) for n in deferred_inputs if n is p_node or n in S)
    fw_outputs = [*new_states, *saved]
    forward = _subgraph([n for n in nodes if n in forward_set], [*P, p_node, *S], fw_outputs)
    serial_group |= {n for n in serial_inputs if n in param_only}
    serial_in = [*[saved[i] for i in serial_saved], *[S[i] for i in serial_states]]
    serial = _subgraph([n for n in nodes if n in serial_group], [*P, *serial_in, *D],
                       [*[n if isinstance(n, fx.Node) else None for n in d_states], *stash])
    deferred_in = [*stash, *[saved[i] for i in deferred_saved],
                   *[p_node if r == "p" else S[r] for r in deferred_rows]]
    deferred = _subgraph([n for n in nodes if n in deferred_group], [*P, *deferred_in], [*d_params, d_p])
    params_used = tuple(i for i, n in enumerate(d_params) if n is not None)
    graphs = StepGraphs(forward, serial, deferred, n_params, n_states, serial_saved, serial_states,
                        deferred_saved, deferred_rows, len(stash), False, params_used)
    return graphs._replace(stacked=_stacking_holds(graphs, [*params, *consts], p, states))


def _append(items: list, item) -> int:
    items.append(item)
    return len(items) - 1


def _ancestors_of_users(sources) -> set:
    """Every node that depends on one of ``sources`` (the sources included)."""
    found = set(sources)
    work = list(sources)
    while work:
        n = work.pop()
        for user in n.users:
            if user not in found and user.op != "output":
                found.add(user)
                work.append(user)
    return found


def _stacking_holds(graphs: StepGraphs, params: list, p: Tensor, states: list) -> bool:
    """Whether the deferred graph, run once on the inputs of two steps stacked along the batch, equals
    the sum (parameters) and concatenation (``∂p``) of two runs: checked on random float64 inputs."""
    try:
        gen = torch.Generator().manual_seed(0)

        def rand(t):
            return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(device=t.device, dtype=t.dtype)

        params64 = [rand(t) if t.is_floating_point() else t for t in params]
        tol = 1e-9 if p.dtype == torch.float64 else 1e-3
        runs = []
        for _ in range(2):
            p_, states_ = rand(p), [rand(s) for s in states]
            fw = graphs.forward(*params64, p_, *states_)
            new, saved = fw[:graphs.n_states], fw[graphs.n_states:]
            d_new = [rand(s) for s in new]
            serial_in = [*[saved[i] for i in graphs.serial_saved], *[states_[i] for i in graphs.serial_states]]
            out = graphs.serial(*params64, *serial_in, *d_new)
            stash = out[graphs.n_states:]
            rows = [p_ if r == "p" else states_[r] for r in graphs.deferred_rows]
            runs.append([*stash, *[saved[i] for i in graphs.deferred_saved], *rows])
        separate = [graphs.deferred(*params64, *inputs) for inputs in runs]
        together = graphs.deferred(*params64, *[torch.cat(pair) for pair in zip(*runs)])
        for i, (a, b, both) in enumerate(zip(*separate, together)):
            if a is None or both is None:
                continue
            want = torch.cat([a, b]) if i == len(together) - 1 else a + b
            if want.shape != both.shape or not torch.allclose(want, both, rtol=tol, atol=tol):
                return False
        return True
    except Exception:
        return False
