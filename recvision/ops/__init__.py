"""Linear-recurrence ops shared by the recvision backbones and the recon models."""
