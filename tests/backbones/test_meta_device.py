"""Every family runs forward on the meta device (shape-only inspection, as timm's config tests do).

The ops check input values (decays must be finite and <= 0); on meta tensors there are no values, and the checks
must not call ``.item()`` on them.
"""

from __future__ import annotations

import pytest
import timm
import torch

import recvision  # noqa: F401  (registers the models)


@pytest.mark.parametrize("name", ["vir_femto", "lightnet_femto", "plstm_femto"])
def test_forward_on_meta_device(name: str) -> None:
    model = timm.create_model(name, device="meta", num_classes=7).eval()
    x = torch.empty(2, *model.pretrained_cfg["input_size"], device="meta")
    features = model.forward_features(x)
    logits = model.forward_head(features)
    assert features.device.type == "meta" and features.shape[0] == 2
    assert logits.shape == (2, 7) and logits.device.type == "meta"
