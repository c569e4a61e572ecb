"""recon: accelerated-MRI reconstruction with recurrent unrolled solvers (RIM, CIRIM, RecurrentVarNet)."""

from importlib.metadata import PackageNotFoundError, version

try:
    # recon ships in the recvision distribution, whose one version source is recvision.__version__
    __version__ = version("recvision")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
