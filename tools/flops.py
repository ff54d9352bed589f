#!/usr/bin/env python3
"""FLOPs / MACs per component of one generation (text encoders, denoiser, VAE), counted with
torch's FlopCounterMode on meta tensors at full size (no GPU, no weights in memory).

    python tools/flops.py                         # writes docs/profile.md and docs/profile-data.json
    python tools/flops.py --models flux-dev,sd3-medium --out-md /tmp/p.md --out-json /tmp/p.json
    python tools/flops.py --show flux-dev --resolution 1024 --steps 28
    python tools/flops.py --check-real --models flux-dev,sd3-medium            # on a GPU: bf16, full size
    python tools/flops.py --check-real --device cpu --size tiny                  # every model, tiny, fp32

--check-real builds the components on --device with random weights, runs the same calls on real
tensors, prints meta vs real FLOPs per call and exits 1 on any mismatch.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffperf.profile import cli  # noqa: E402

if __name__ == "__main__":
    cli.DESCRIPTION = __doc__
    sys.exit(cli.main())
