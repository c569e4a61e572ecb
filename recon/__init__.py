"""recon: accelerated-MRI reconstruction with recurrent unrolled solvers (RIM, CIRIM, RecurrentVarNet)."""

__version__ = "0.1.0"
