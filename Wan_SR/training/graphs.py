"""CUDA graphs for a frozen, fixed-shape part of a training step (docs/method.md §9, "The pixel
losses in CUDA graphs").

:class:`Graphed` wraps ``fn(*tensors) -> tuple of tensors`` whose work for given input shapes is
a fixed sequence of GPU kernels: no host synchronisation, no control flow on values, no trainable
parameters (gradients reach the inputs only). On a GPU, the first call with gradients for each
signature (shapes, dtypes, which inputs need gradients, the autocast state) captures ``fn``'s
forward and backward once (``torch.cuda.make_graphed_callables``, after three warm-up runs), and
later calls replay them: thousands of small kernels cost one launch each way. Elsewhere, without
gradients, or past ``max_graphs`` signatures, ``fn`` runs as it is. The values are the same
kernels' either way.

What the caller must keep: each call's backward runs before the next call of the same signature
(the graphs hold one set of activations), which a training step that does forward, backward,
forward, backward does. The outputs are copied out of the graph's memory, so they stay valid
after the next replay.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger(__name__)


def _autocast_state(device_type: str) -> tuple:
    return (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))


class Graphed:
    """``fn`` with its forward and backward replayed from CUDA graphs (see the module)."""

    def __init__(self, fn: Callable, max_graphs: int = 2, name: str = "graphed"):
        self.fn, self.max_graphs, self.name = fn, max_graphs, name
        self.graphs: dict = {}
        self.captures = 0   # signatures captured
        self.replays = 0    # calls served by a graph
        self._full_noted = False

    def signature(self, args: tuple) -> tuple:
        dev = args[0].device.type
        return tuple((tuple(a.shape), a.dtype, a.requires_grad) for a in args) + \
            (str(args[0].device), _autocast_state(dev))

    def usable(self, args: tuple) -> bool:
        """Graphs serve this call: tensors on one CUDA device, some needing gradients."""
        if not args or not torch.is_grad_enabled():
            return False
        dev = args[0].device
        return dev.type == "cuda" and all(a.device == dev for a in args) and \
            any(a.requires_grad for a in args)

    def __call__(self, *args: torch.Tensor) -> tuple:
        if not self.usable(args):
            return tuple(self.fn(*args))
        key = self.signature(args)
        graphed = self.graphs.get(key)
        if graphed is None:
            if len(self.graphs) >= self.max_graphs:
                if not self._full_noted:
                    log.info("%s: %d input shapes captured already; others run without CUDA "
                             "graphs", self.name, self.max_graphs)
                    self._full_noted = True
                return tuple(self.fn(*args))
            try:
                graphed = self._capture(args)
            except (RuntimeError, AssertionError) as e:  # a kernel that cannot be captured
                log.warning("%s: CUDA graph capture failed (%s); they run without graphs",
                            self.name, str(e).splitlines()[0] if str(e) else type(e).__name__)
                self.max_graphs = len(self.graphs)
                self._full_noted = True
                return tuple(self.fn(*args))
            self.graphs[key] = graphed
            self.captures += 1
            log.debug("%s: captured for inputs %s", self.name, [tuple(a.shape) for a in args])
        self.replays += 1
        # the graph's outputs live in its own memory, rewritten by the next replay
        return tuple(o.clone() for o in graphed(*args))

    def _capture(self, args: tuple) -> Callable:
        """The graphed callable of ``fn`` for inputs like ``args``, under the caller's autocast
        dtype and setting (its cast cache off, as graph capture requires)."""
        dev = args[0].device.type
        enabled, dtype = _autocast_state(dev)
        sample = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
        with torch.autocast(dev, dtype=dtype, enabled=enabled, cache_enabled=False):
            return torch.cuda.make_graphed_callables(lambda *xs: tuple(self.fn(*xs)), sample)
