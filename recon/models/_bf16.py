"""A probe for bfloat16 channels-last convolutions that the CPU backend gets wrong.

Some oneDNN builds compute wrong bf16 weight gradients for channels-last convolutions with particular shapes (on
PyTorch 2.14 CPU wheels without AMX: 3x3 convs with dilation 2 whose channel count is 4 or 8 modulo 16, e.g. the
24-channel GRU stacks of the default RecurrentVarNet, which then trained to NaN). Which shapes are affected depends
on the build and the CPU, so the check is empirical: every distinct conv shape of a model is run once on a tiny
input in bf16 channels-last and compared with the same conv in float32 NCHW. A faulty kernel can also write out of
bounds and kill the process, so the probes run in a child process; a shape the child dies on counts as faulty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from torch import nn

__all__ = ["faulty_bf16_channels_last_convs"]

ShapeKey = tuple  # (in, out, kernel, stride, padding, dilation, groups, bias, padding_mode), JSON-friendly
_CHILD = """
import json, sys
import torch
from recon.models._bf16 import _conv_from_key, _shape_faulty
args = json.load(sys.stdin)
torch.set_num_threads(1)
device = torch.device(args["device"])
for key in args["shapes"]:
    print("verdict", int(_shape_faulty(_conv_from_key(key), device, args["backward"])), flush=True)
"""

# bf16 rounds to 8 mantissa bits (relative error ~3e-3 on these sums); a faulty kernel is off by O(1)
_TOLERANCE = 0.05


def _rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got = got.float()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


def _shape_faulty(conv: nn.Conv2d, device: torch.device, backward: bool) -> bool:
    """Whether a conv shaped like ``conv`` gives wrong bf16 channels-last outputs (and weight / input gradients)."""
    g = torch.Generator().manual_seed(0)
    probe = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    reach = max(d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True))
    side = reach + 32  # an output of 32 x 32 at least: the faulty shapes show up there already
    x = torch.randn(1, conv.in_channels, side, side, generator=g)
    upstream = None
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        model = probe.to(device=device, memory_format=layout)
        xin = x.to(device).contiguous(memory_format=layout).requires_grad_(backward)
        with (
            torch.set_grad_enabled(backward),
            torch.autocast(device.type, torch.bfloat16, enabled=layout != torch.contiguous_format),
        ):
            out = model(xin)
        grads: tuple[torch.Tensor, ...] = ()
        if backward:
            if upstream is None:  # one upstream gradient for both layouts
                upstream = torch.randn(out.shape, generator=g).to(device)
            grads = torch.autograd.grad((out.float() * upstream).sum(), (model.weight, xin))
        results.append((out.detach(), *grads))
    reference, bf16 = results
    return any(_rel_error(b, r) > _TOLERANCE for b, r in zip(bf16, reference, strict=True))


def _key(conv: nn.Conv2d) -> ShapeKey:
    padding = conv.padding if isinstance(conv.padding, str) else list(conv.padding)
    return (
        conv.in_channels,
        conv.out_channels,
        list(conv.kernel_size),
        list(conv.stride),
        padding,
        list(conv.dilation),
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )


def _conv_from_key(key: ShapeKey) -> nn.Conv2d:
    cin, cout, kernel, stride, padding, dilation, groups, bias, padding_mode = key
    padding = padding if isinstance(padding, str) else tuple(padding)
    return nn.Conv2d(cin, cout, tuple(kernel), tuple(stride), padding, tuple(dilation), groups, bias, padding_mode)


def _verdicts(keys: list[ShapeKey], device: torch.device, backward: bool) -> list[bool]:
    """Whether each shape is faulty, probed in child processes (one per crash)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    verdicts: list[bool] = []
    while len(verdicts) < len(keys):
        pending = keys[len(verdicts) :]
        payload = json.dumps({"device": str(device), "backward": backward, "shapes": pending})
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD], input=payload, capture_output=True, text=True, env=env, check=False
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("verdict ")]
        verdicts += [line.endswith("1") for line in lines]
        if proc.returncode != 0 and len(verdicts) < len(keys):
            if proc.returncode > 0 and not lines:  # not a crash in a kernel: a broken environment
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"the bf16 channels-last probe could not run ({tail})")
            verdicts.append(True)  # the child died probing this shape
    return verdicts


def faulty_bf16_channels_last_convs(
    model: nn.Module, device: str | torch.device = "cpu", backward: bool = True
) -> list[str]:
    """Names of ``model``'s ``Conv2d`` modules whose shape the backend computes wrongly in bf16 channels-last.

    Args:
        model: Any module; each distinct conv shape is probed once in a child process (a tiny forward, and
            backward with ``backward``).
        device: Where the model will run.
        backward: Check the weight and input gradients too (training), not only the output (inference).

    Returns:
        The module names (empty when every conv shape agrees with float32 within bf16 rounding).
    """
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    keys: list[ShapeKey] = []
    for _, conv in convs:
        if _key(conv) not in keys:
            keys.append(_key(conv))
    if not keys:
        return []
    faulty = {
        json.dumps(k) for k, bad in zip(keys, _verdicts(keys, torch.device(device), backward), strict=True) if bad
    }
    return [name for name, conv in convs if json.dumps(_key(conv)) in faulty]
