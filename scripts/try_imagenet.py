"""Can this machine get Keras' ImageNet weights for the demo's backbone? Exit 0 when they load
(downloaded now, or already in ~/.keras/models), else exit 1 with the reason on one line.

A bounded attempt: every network call gives up after 8 s (run it under `timeout` too), so an
offline machine learns it in seconds instead of hanging.
"""

import argparse
import contextlib
import socket
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--alpha", type=float, default=0.35)
    args = ap.parse_args()
    socket.setdefaulttimeout(8)
    from datatool.core import tfquiet

    tfquiet.install()
    from trainer.weights import build_backbone

    try:  # Keras reports its download on stdout: keep stdout for the one-line answer
        with contextlib.redirect_stdout(sys.stderr):
            build_backbone("mobilenetv2", image_size=args.image_size, alpha=args.alpha, weights="imagenet")
    except Exception as e:  # WeightsError says why; keep its first sentence
        print(str(e).split(". Without internet")[0].replace("\n", " "))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
