"""MRI operators: centred FFTs, coil sensitivities and the multi-coil forward model (complex64 tensors)."""

from recon.ops._shapes import center_crop
from recon.ops.coils import estimate_sens_maps, rss, sens_expand, sens_reduce
from recon.ops.fft import fft2c, ifft2c, to_complex, to_real_pair
from recon.ops.forward import (
    conjugate_gradient,
    log_likelihood_gradient,
    mask_kspace,
    sense_adjoint,
    sense_forward,
    sense_normal,
)
from recon.ops.noise import add_noise_floor, estimate_noise_std, rss_noise_floor

__all__ = [
    "add_noise_floor",
    "estimate_noise_std",
    "rss_noise_floor",
    "center_crop",
    "conjugate_gradient",
    "estimate_sens_maps",
    "fft2c",
    "ifft2c",
    "log_likelihood_gradient",
    "mask_kspace",
    "rss",
    "sens_expand",
    "sens_reduce",
    "sense_adjoint",
    "sense_forward",
    "sense_normal",
    "to_complex",
    "to_real_pair",
]
