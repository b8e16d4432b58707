"""Runs in the mediapipe interpreter (LORASTUDIO_MEDIAPIPE_PYTHON): `python _selfie_worker.py IN.png OUT.png`.

Writes the selfie-segmentation mask (white = person) as a PNG and prints {"ok": true} or {"error": ...}.
Imports nothing from lorastudio: that interpreter has only mediapipe and its own numpy.
"""

import json
import sys


def main() -> None:
    import cv2
    import mediapipe as mp
    import numpy as np

    source, target = sys.argv[1], sys.argv[2]
    image_bgr = cv2.imread(source, cv2.IMREAD_COLOR)
    if image_bgr is None:
        raise SystemExit(f"cannot read {source}")
    pixels = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        result = segmenter.process(pixels)
    if result.segmentation_mask is None:
        print(json.dumps({"error": "mediapipe found no person"}))
        return
    mask = (np.clip(result.segmentation_mask, 0.0, 1.0) * 255).astype(np.uint8)
    cv2.imwrite(target, mask)
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    main()
