"""Check that a refactor of the recon inference and training-data paths leaves their results bit-identical to
another git revision.

``python tests/recon/compare_revisions.py REV`` extracts ``REV`` (e.g. ``main``) with ``git archive`` into a temporary
folder, writes a small synthetic dataset once, and runs the same workload in one subprocess per tree: tiny models
(fixed seeds) and the shipped default weights through ``recon.inference.reconstruct_volume`` (line and 2-D masks,
``max`` / ``mean`` scaling, with and without the noise floor, batch sizes 1 and 2, zero-filled and CS),
``recon.training.data.prepare_inputs`` / ``SliceMaskDataset`` items (training and validation masks),
``recon.training.data.reconstruct`` and the validation hook's metrics. Every result is compared with
``torch.equal``; it prints one line per result and exits non-zero when any differs. It only uses public names that
exist in both trees.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _workload(data: Path, out: Path) -> None:
    """Run every case in the tree on ``sys.path`` and save ``{name: tensor}`` to ``out``."""
    from recon.config import DataConfig
    from recon.inference import Preprocessing, build_mask_func, load_volume, make_reconstructor, reconstruct_volume
    from recon.models import create_model
    from recon.training.data import SliceMaskDataset, make_validator, prepare_inputs, reconstruct
    from recon.weights import default_config, load_default_model

    results: dict[str, torch.Tensor] = {}
    files = sorted(data.glob("*.h5"))
    torch.manual_seed(0)
    tiny = {
        "cirim": create_model("cirim", num_cascades=1, num_steps=2, hidden_channels=4).eval(),
        "rim": create_model("rim", num_steps=2, hidden_channels=4).eval(),
        "rim-gru-stack": create_model(
            "rim",
            num_steps=2,
            hidden_channels=4,
            regularizer="gru_stack",
            learned_initializer=True,
            initializer_channels=(4, 4),
            initializer_dilations=(1, 2),
            fft_centered=False,
        ).eval(),
        "rvn": create_model(
            "recurrentvarnet",
            num_steps=2,
            hidden_channels=4,
            num_layers=2,
            learned_initializer=True,
            initializer_channels=(4, 4),
            initializer_dilations=(1, 2),
        ).eval(),
        "cirim-dc": create_model("cirim", num_cascades=2, num_steps=2, hidden_channels=4, explicit_dc=True).eval(),
    }
    models = {**tiny, "default-rim": load_default_model("rim")}
    for mask in ("equispaced", "poisson"):
        volume = load_volume(files[0], build_mask_func(mask, 4, 0.08), seed=1)
        for method in ("zero-filled", "cs"):
            run = make_reconstructor(method, cs_iterations=3) if method == "cs" else make_reconstructor(method)
            results[f"volume/{mask}/{method}"] = torch.from_numpy(reconstruct_volume(volume, run, batch_size=2))
        for name, model in models.items():
            for normalize in ("max", "mean"):
                for floor in (False, True):
                    for batch in (1, 2):
                        prep = Preprocessing("acs", normalize, floor)
                        image = reconstruct_volume(volume, make_reconstructor(model), batch, preprocessing=prep)
                        results[f"volume/{mask}/{name}/{normalize}/floor={floor}/b{batch}"] = torch.from_numpy(image)
    for floor in (False, True):
        for normalize in ("max", "mean"):
            config = DataConfig(normalize=normalize, noise_floor=floor)
            volume = load_volume(files[1], build_mask_func("random", 4, 0.08), seed=2)
            k, m, n = volume.masked_kspace, volume.mask, volume.num_low_frequencies
            for name, model in models.items():
                results[f"reconstruct/{name}/{normalize}/floor={floor}"] = reconstruct(model, k, m, config, n)
            inputs = prepare_inputs(k[0], m.reshape(-1), n, config)
            for key, value in inputs.items():
                results[f"prepare_inputs/{normalize}/floor={floor}/{key}"] = torch.as_tensor(value)
            for train in (True, False):
                dataset = SliceMaskDataset(data, config, seed=3, train=train)
                for index in range(len(dataset)):
                    prefix = f"item/{normalize}/floor={floor}/train={train}/{index}"
                    for key, value in dataset[index].items():
                        if isinstance(value, (torch.Tensor, float, int)):
                            results[f"{prefix}/{key}"] = torch.as_tensor(value)
                if not train:
                    for name, model in tiny.items():
                        metrics = make_validator(dataset)(model)
                        for key, value in metrics.items():
                            results[f"validate/{name}/{normalize}/floor={floor}/{key}"] = torch.tensor(value)
    results["default_config/rim"] = torch.tensor(float(default_config("rim").data.noise_floor))
    torch.save(results, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="git revision to compare with (e.g. main)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        other = tmp_path / "other"
        other.mkdir()
        archive = tmp_path / "other.tar"
        subprocess.run(["git", "archive", "-o", str(archive), args.rev, "recon", "recvision"], cwd=ROOT, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(other, filter="data")
        data = tmp_path / "data"
        code = (
            "import sys; from pathlib import Path; from recon.data.synthetic import write_synthetic_dataset; "
            "write_synthetic_dataset(Path(sys.argv[1]), num_volumes=2, num_slices=2, shape=(32, 32), num_coils=3, "
            "recon_size=(24, 32))"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-c", code, str(data)], check=True, env=env)
        outputs = {}
        for label, tree in (("this tree", ROOT), (args.rev, other)):
            out = tmp_path / f"{label.replace(' ', '_')}.pt"
            call = f"import sys; sys.path.insert(0, {str(ROOT / 'tests' / 'recon')!r}); import compare_revisions as c; "
            call += f"c._workload(__import__('pathlib').Path({str(data)!r}), __import__('pathlib').Path({str(out)!r}))"
            subprocess.run([sys.executable, "-c", call], check=True, env={**os.environ, "PYTHONPATH": str(tree)})
            outputs[label] = torch.load(out, weights_only=True)
    ours, theirs = outputs["this tree"], outputs[args.rev]
    failed = sorted(set(ours) ^ set(theirs))
    for name in failed:
        print(f"MISSING {name}")
    for name in sorted(set(ours) & set(theirs)):
        same = ours[name].dtype == theirs[name].dtype and torch.equal(ours[name], theirs[name])
        print(f"{'same' if same else 'DIFFERENT'} {name}")
        if not same:
            failed.append(name)
    print(f"{len(ours)} results, {len(failed)} different or missing")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
