"""A random-weight Wav2Lip model folder for tests and examples.

The folder has the layout of a released Wav2Lip checkpoint: one ``wav2lip.pth`` (or, with
``gan``, ``wav2lip_gan.pth``) holding what Wav2Lip's training script saves,

    {"state_dict": {...}, "optimizer": Adam state_dict, "global_step": 0, "global_epoch": 0}

with the full-size network (36,298,035 parameters, ~145 MB) and, unless ``prefixed=False``,
keys carrying the ``module.`` prefix a DataParallel training run leaves. The weights are
RANDOM (the Adam state is a fresh one, without moments): a synced mouth is noise. What the
folder keeps is the plumbing: file names, dict entries, key names and tensor shapes.

    python scripts/tiny_wav2lip.py [DEST] [--seed N] [--gan] [--no-prefix]
        # default DEST: <repo>/models/tiny-wav2lip (DEST is the model folder itself)

API: ``build(dest, seed=0, gan=False, prefixed=True) -> Path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(REPO_ROOT))
from stamped_folder import build_stamped, stamp_text  # noqa: E402  (beside this script)

DEFAULT_DEST = REPO_ROOT / "models" / "tiny-wav2lip"
STAMP = ".tiny-wav2lip-version"
NETWORK_SOURCE = REPO_ROOT / "pipeline" / "lipsync" / "wav2lip.py"


def _build(folder: Path, seed: int, gan: bool, prefixed: bool) -> None:
    import torch

    from pipeline.lipsync.wav2lip import Wav2Lip

    torch.manual_seed(seed)
    net = Wav2Lip()
    prefix = "module." if prefixed else ""
    state = {prefix + key: value for key, value in net.state_dict().items()}
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)  # Wav2Lip's initial learning rate
    checkpoint = {"state_dict": state, "optimizer": optimizer.state_dict(), "global_step": 0, "global_epoch": 0}
    torch.save(checkpoint, folder / ("wav2lip_gan.pth" if gan else "wav2lip.pth"))


def build(dest: Path, seed: int = 0, gan: bool = False, prefixed: bool = True) -> Path:
    """Build the folder `dest` (a Wav2Lip model folder) and return it.

    A folder with the same stamp (builder and network source, options, torch version) is
    returned as is; otherwise it is built in a temporary sibling and renamed into place.
    """
    stamp = stamp_text(__file__, ("torch",), {"network": NETWORK_SOURCE}, seed=seed, gan=gan, prefixed=prefixed)
    return build_stamped(Path(dest), STAMP, stamp, lambda tmp: _build(tmp, seed, gan, prefixed))


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build a random-weight Wav2Lip model folder.")
    parser.add_argument("dest", nargs="?", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gan", action="store_true", help="name the file wav2lip_gan.pth")
    parser.add_argument("--no-prefix", action="store_true", help="keys without the 'module.' prefix")
    args = parser.parse_args(argv[1:])
    print(build(args.dest, args.seed, args.gan, prefixed=not args.no_prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
