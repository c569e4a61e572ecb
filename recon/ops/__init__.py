"""MRI operators: centred FFTs, coil sensitivities and the multi-coil forward model (complex64 tensors)."""
