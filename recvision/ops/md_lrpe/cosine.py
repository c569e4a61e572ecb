"""MD-LRPE (cosine): the multi-dimensional linearised relative positional encoding of LightNet.

Qin et al., "You Only Scan Once" (LightNet, arXiv 2405.21022). Tokens are in row-major order over a spatial
``grid = (N_1, ..., N_m)``; a token at grid index ``(n_1, ..., n_m)`` gets, per head, the phase vector::

    phi = concat_i(n_i * theta[h])[:D]        (zero-padded when m * E < D)

and ``x -> [x * cos(phi), x * sin(phi)]``. Because ``phi`` is linear in the position ``n``::

    map(q)_s . map(k)_r = sum_d q_d k_d (cos phi_s cos phi_r + sin phi_s sin phi_r)
                        = sum_d q_d k_d cos(phi_d(n_s - n_r))

so ``q . k`` after the map depends on positions only through ``n_s - n_r``. The maths is in ``README.md``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["md_lrpe_cosine", "md_lrpe_phase", "md_lrpe_theta_dim"]


def md_lrpe_theta_dim(head_dim: int, num_axes: int) -> int:
    """Default width ``E`` of ``theta``: ``next_pow2(ceil(head_dim / num_axes))`` (as in xopes), so ``m E >= D``."""
    if head_dim < 1 or num_axes < 1:
        raise ValueError(f"head_dim and num_axes must be >= 1; got {head_dim}, {num_axes}")
    e = -(-head_dim // num_axes)
    return 1 << max(0, math.ceil(math.log2(e)))


def _check_grid(grid: tuple[int, ...]) -> tuple[int, ...]:
    if not isinstance(grid, (tuple, list)) or len(grid) == 0:
        raise ValueError(f"grid must be a non-empty tuple of ints (N_1, ..., N_m); got {grid!r}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in grid):
        raise ValueError(f"grid entries must be ints >= 1; got {grid!r}")
    return tuple(grid)


def md_lrpe_phase(theta: torch.Tensor, grid: tuple[int, ...], head_dim: int, num_extra_tokens: int = 0) -> torch.Tensor:
    """Phases ``phi [T, H, D]`` for the tokens of ``grid`` in row-major order, then ``num_extra_tokens`` zeros.

    Args:
        theta: frequencies ``[H, E]``.
        grid: spatial shape ``(N_1, ..., N_m)``.
        head_dim: ``D``; the concatenated ``m * E`` phases are truncated or zero-padded to it.
        num_extra_tokens: tokens after the grid (e.g. a class token), which get phase 0.

    Returns:
        ``phi [prod(grid) + num_extra_tokens, H, D]`` in ``theta``'s dtype (at least float32).
    """
    grid = _check_grid(grid)
    if not isinstance(theta, torch.Tensor) or theta.ndim != 2:
        shape = tuple(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__
        raise ValueError(f"theta must be a tensor [H, E]; got {shape}")
    dtype = torch.promote_types(theta.dtype, torch.float32)
    axes = [torch.arange(n, device=theta.device, dtype=dtype) for n in grid]
    index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))  # [P, m], row-major
    th = theta.to(dtype)
    phi = torch.cat([index[:, i, None, None] * th[None] for i in range(len(grid))], dim=-1)  # [P, H, m E]
    width = phi.shape[-1]
    phi = phi[..., :head_dim] if width >= head_dim else torch.nn.functional.pad(phi, (0, head_dim - width))
    if num_extra_tokens:
        phi = torch.cat([phi, phi.new_zeros(num_extra_tokens, *phi.shape[1:])], dim=0)
    return phi


def md_lrpe_cosine(
    x: torch.Tensor, theta: torch.Tensor, grid: tuple[int, ...], num_extra_tokens: int = 0
) -> torch.Tensor:
    """Cosine MD-LRPE: ``x [B, T, H, D] -> [x * cos(phi), x * sin(phi)]`` of shape ``[B, T, H, 2D]``.

    Apply it to both queries and keys; then ``map(q_s) . map(k_r)`` depends only on ``n_s - n_r`` for grid tokens
    (see the module docstring). Extra tokens have phase 0, so they see no position at all.

    Args:
        x: ``[B, T, H, D]`` with ``T = prod(grid) + num_extra_tokens``; grid tokens first, row-major.
        theta: learnable frequencies ``[H, E]`` (``E = md_lrpe_theta_dim(D, len(grid))`` covers ``D`` exactly
            after truncation; a smaller ``E`` leaves the last features unrotated).
        grid: spatial shape ``(N_1, ..., N_m)``.
        num_extra_tokens: tokens at the END of the sequence without a grid position (phase 0).

    Returns:
        ``[B, T, H, 2D]`` in ``x``'s dtype; differentiable w.r.t. ``x`` and ``theta``.

    Raises:
        ValueError: naming the offending argument.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating tensor [B, T, H, D]; got {shape}")
    grid = _check_grid(grid)
    if not isinstance(num_extra_tokens, int) or num_extra_tokens < 0:
        raise ValueError(f"num_extra_tokens must be an int >= 0; got {num_extra_tokens!r}")
    B, T, H, D = x.shape
    if T != math.prod(grid) + num_extra_tokens:
        raise ValueError(
            f"x has T = {T} tokens but grid {grid} plus num_extra_tokens = {num_extra_tokens} "
            f"gives {math.prod(grid) + num_extra_tokens}"
        )
    if not isinstance(theta, torch.Tensor) or theta.ndim != 2 or theta.shape[0] != H:
        shape = tuple(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__
        raise ValueError(f"theta must be a tensor [H, E] with H = {H}; got {shape}")
    if not theta.is_floating_point():
        raise ValueError(f"theta must be a floating-point tensor; got {theta.dtype}")
    phi = md_lrpe_phase(theta.to(x.device), grid, D, num_extra_tokens)  # [T, H, D]
    xf = x.to(torch.promote_types(x.dtype, phi.dtype))
    return torch.cat([xf * phi.cos(), xf * phi.sin()], dim=-1).to(x.dtype)
