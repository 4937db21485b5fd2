"""`--inspect`: pictures of what happens inside a network while it trains.

Five PNGs, the diagnostics that say whether a network trains well:

- ``activations.png``: per layer, the histogram of its outputs, at the first, middle and last
  step of the run. Saturated or dead units show as spikes at the ends or at zero.
- ``gradients.png``: per layer, the histogram of the gradient of the loss with respect to its
  output, at the same steps. Layers whose gradients are much smaller than the others learn slowly.
- ``update_ratio.png``: per weight tensor (matrices and conv kernels), log10 of
  std(update) / std(weight) at every step. Around -3 is healthy; far below, the layer barely
  moves; far above, it is rewritten each step.
- ``bn_stats.png`` (only when the model has BatchNorm): per BatchNorm layer, the batch mean and
  the batch variance of its input at every step, averaged over channels, with the range over
  channels shaded. Drifting statistics are what BatchNorm is there to absorb.
- ``grad_norm.png``: the global L2 norm of all gradients, sqrt(sum over parameters of
  ||dL/dp||^2), at every step before clipping, on a log scale. With ``--clip-grad MAX_NORM`` it
  also shows MAX_NORM as a horizontal line and the norm the optimizer step actually used,
  min(norm, MAX_NORM). Spikes of orders of magnitude are exploding gradients (an RNN's product
  of Jacobians, docs/rnn_bptt.md); a norm that shrinks steadily towards 0 while the loss stays
  high, vanishing ones. metrics.json holds the same numbers as ``grad_norm``, one per step.

The layers are the modules that come from `tritonprop.ops` (or torch.nn, for the twin models),
in the order they first run; at most `MAX_LAYERS` of them, evenly spaced, keep the pictures legible.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

MAX_LAYERS = 12
# Values kept per layer and snapshot: enough for a smooth histogram at any model size.
MAX_SAMPLES = 200_000
BINS = 80
CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


def _is_layer(module: torch.nn.Module) -> bool:
    module_name = type(module).__module__
    return (module_name.startswith(("tritonprop.ops", "torch.nn.modules"))
            and not isinstance(module, CONTAINERS))


def _first_tensor(value):
    """The tensor a layer produced: the output itself, the first of a tuple, a PackedSequence's data."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, torch.nn.utils.rnn.PackedSequence):
        return value.data
    if isinstance(value, (tuple, list)) and value:
        return _first_tensor(value[0])
    return None


def _sample(tensor: torch.Tensor) -> np.ndarray:
    flat = tensor.detach().flatten()
    if flat.numel() > MAX_SAMPLES:
        # An even stride, not a random draw: inspection must not consume the training RNG.
        flat = flat[:: -(-flat.numel() // MAX_SAMPLES)]
    return flat.float().cpu().numpy()


class Inspector:
    """Hooks on a model that record the pictures' data; `write(out_dir)` draws them.

    The training loop calls `begin_step(step)` before the forward pass, `before_update(grad_norm)`
    after the backward pass (and the clipping) and `after_update(step)` after the optimizer step.
    `clip_grad` is the run's --clip-grad threshold (None: no clipping), drawn in grad_norm.png.
    """

    def __init__(self, model: torch.nn.Module, first_step: int, last_step: int, clip_grad: float | None = None):
        self.model = model
        self.clip_grad = clip_grad
        self.grad_norm_steps: list[int] = []
        self.grad_norms: list[float] = []
        self.snapshot_steps = sorted({first_step, (first_step + last_step) // 2, last_step})
        self.capturing = False
        self.step = first_step
        self.layer_order: list[str] = []
        self.activations: dict[int, dict[str, np.ndarray]] = {}
        self.gradients: dict[int, dict[str, np.ndarray]] = {}
        self.weights = {name: p for name, p in model.named_parameters() if p.dim() >= 2}
        self.ratio_steps: list[int] = []
        self.ratios: dict[str, list[float]] = {name: [] for name in self.weights}
        self.bn_steps: dict[str, list[int]] = {}
        self.bn_stats: dict[str, dict[str, list[np.ndarray]]] = {}
        self._before: dict[str, torch.Tensor] = {}
        self._handles = []
        for name, module in model.named_modules():
            if module is model or not _is_layer(module):
                continue
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                self._handles.append(module.register_forward_pre_hook(self._batch_norm_hook(name)))

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if name not in self.layer_order:
                self.layer_order.append(name)
            if not self.capturing:
                return
            tensor = _first_tensor(output)
            if tensor is None or not tensor.is_floating_point():
                return
            self.activations.setdefault(self.step, {})[name] = _sample(tensor)
            if tensor.requires_grad:
                step = self.step

                def record_gradient(grad):
                    self.gradients.setdefault(step, {})[name] = _sample(grad)
                tensor.register_hook(record_gradient)
        return hook

    def _batch_norm_hook(self, name: str):
        def hook(module, inputs):
            if not module.training:
                return
            x = inputs[0].detach().float()
            dims = [d for d in range(x.dim()) if d != 1]
            stats = self.bn_stats.setdefault(name, {"mean": [], "var": []})
            stats["mean"].append(x.mean(dim=dims).cpu().numpy())
            stats["var"].append(x.var(dim=dims, unbiased=False).cpu().numpy())
            self.bn_steps.setdefault(name, []).append(self.step)
        return hook

    def begin_step(self, step: int) -> None:
        self.step = step
        self.capturing = step in self.snapshot_steps

    def before_update(self, grad_norm: torch.Tensor | float | None = None) -> None:
        """grad_norm: the global gradient norm before clipping, as `clip_grad_norm_` returned it;
        None when nothing was clipped: it is then measured here, from the gradients as they are."""
        if grad_norm is None:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        self.grad_norm_steps.append(self.step)
        self.grad_norms.append(float(grad_norm))
        self._before = {name: p.detach().clone() for name, p in self.weights.items()}

    @torch.no_grad()
    def after_update(self, step: int) -> None:
        self.ratio_steps.append(step)
        for name, p in self.weights.items():
            update = (p.detach() - self._before[name]).float()
            data_std = self._before[name].float().std()
            ratio = update.std() / data_std if data_std > 0 else torch.tensor(float("nan"))
            self.ratios[name].append(float(torch.log10(ratio)) if ratio > 0 else float("nan"))
        self._before = {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _shown_layers(self) -> list[str]:
        layers = self.layer_order
        if len(layers) <= MAX_LAYERS:
            return list(layers)
        picks = np.linspace(0, len(layers) - 1, MAX_LAYERS).round().astype(int)
        return [layers[i] for i in sorted(set(picks))]

    def write(self, out_dir: Path) -> list[str]:
        """Draws the PNGs into out_dir; returns their file names."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        written = []
        shown = self._shown_layers()
        for kind, snapshots in (("activations", self.activations), ("gradients", self.gradients)):
            if snapshots:
                figure = self._histograms(plt, kind, snapshots, shown)
                written.append(self._save(plt, figure, out_dir / f"{kind}.png"))
        if self.ratio_steps and self.ratios:
            written.append(self._save(plt, self._update_ratios(plt), out_dir / "update_ratio.png"))
        if self.bn_stats:
            written.append(self._save(plt, self._batch_norm(plt), out_dir / "bn_stats.png"))
        if self.grad_norms:
            written.append(self._save(plt, self._grad_norm(plt), out_dir / "grad_norm.png"))
        return written

    @staticmethod
    def _save(plt, figure, path: Path) -> str:
        figure.tight_layout()
        figure.savefig(path, dpi=90)
        plt.close(figure)
        return path.name

    def _histograms(self, plt, kind: str, snapshots: dict, shown: list[str]):
        steps = sorted(snapshots)
        figure, axes = plt.subplots(1, len(steps), figsize=(6 * len(steps), 4.5), squeeze=False)
        colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(shown), 1)))
        for axis, step in zip(axes[0], steps):
            values = snapshots[step]
            names = [name for name in shown if name in values]
            # One bin range per panel, wide enough for every layer's bulk (the 0.1%..99.9% quantiles).
            everything = np.concatenate([values[name] for name in names]) if names else np.zeros(1)
            finite = everything[np.isfinite(everything)]
            low, high = (np.quantile(finite, [0.001, 0.999]) if finite.size else (0.0, 1.0))
            if high <= low:
                low, high = low - 1.0, high + 1.0
            edges = np.linspace(low, high, BINS + 1)
            centres = (edges[:-1] + edges[1:]) / 2
            for name, colour in zip(shown, colours):
                if name not in values:
                    continue
                counts, _ = np.histogram(values[name], bins=edges, density=True)
                layer = values[name]
                axis.plot(centres, counts, color=colour,
                          label=f"{name} (mean {layer.mean():+.2g}, std {layer.std():.2g})")
            axis.set_title(f"{kind} at step {step + 1}")
            axis.set_xlabel("value" if kind == "activations" else "dL/d(output)")
            axis.set_ylabel("density")
            axis.legend(fontsize=6)
        return figure

    def _update_ratios(self, plt):
        figure, axis = plt.subplots(figsize=(9, 4.5))
        names = list(self.ratios)
        colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(names), 1)))
        steps = np.asarray(self.ratio_steps) + 1
        for name, colour in zip(names, colours):
            axis.plot(steps, self.ratios[name], color=colour, linewidth=1, label=name)
        axis.axhline(-3, color="black", linestyle="--", linewidth=1, label="1e-3")
        axis.set_xlabel("step")
        axis.set_ylabel("log10(std(update) / std(weight))")
        axis.set_title("update-to-data ratio per weight tensor")
        axis.legend(fontsize=6, ncol=2 if len(names) > 10 else 1)
        return figure

    def _batch_norm(self, plt):
        figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(self.bn_stats), 1)))
        for (name, stats), colour in zip(self.bn_stats.items(), colours):
            steps = np.asarray(self.bn_steps[name]) + 1
            for axis, key in zip(axes, ("mean", "var")):
                per_step = np.stack(stats[key])  # [steps, channels]
                axis.plot(steps, per_step.mean(1), color=colour, linewidth=1, label=name)
                axis.fill_between(steps, per_step.min(1), per_step.max(1), color=colour, alpha=0.15)
        for axis, key in zip(axes, ("mean", "variance")):
            axis.set_xlabel("step")
            axis.set_title(f"BatchNorm input: batch {key}\n(line: average over channels; band: min..max)")
            axis.legend(fontsize=6)
        return figure

    def _grad_norm(self, plt):
        figure, axis = plt.subplots(figsize=(9, 4.5))
        steps = np.asarray(self.grad_norm_steps) + 1
        norms = np.asarray(self.grad_norms)
        axis.plot(steps, norms, color="tab:blue", linewidth=1, label="norm before clipping")
        if self.clip_grad is not None:
            axis.plot(steps, np.minimum(norms, self.clip_grad), color="tab:orange", linewidth=1,
                      label="norm the step used, min(norm, max_norm)")
            axis.axhline(self.clip_grad, color="black", linestyle="--", linewidth=1,
                         label=f"--clip-grad {self.clip_grad:g}")
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel("global L2 norm of the gradients")
        axis.set_title("gradient norm per step" + ("" if self.clip_grad is None else ", and after clipping"))
        axis.legend(fontsize=7)
        return figure
