"""Runs in the mediapipe interpreter (LORASTUDIO_MEDIAPIPE_PYTHON), not in lorastudio's: imports no lorastudio.

Usage: python _mediapipe_worker.py IMAGE.png  ->  one JSON line on stdout:
{"pose": [[x, y, visibility], ...33] or null, "face": [[x, y], ...478] or null}, fractions of the image.
Uses the models bundled in mediapipe 0.10.21 (pose complexity 1, face mesh with iris points): no download.
"""

import json
import sys


def main(path: str) -> None:
    import cv2
    import mediapipe as mp

    image_bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if image_bgr is None:
        raise SystemExit(f"cannot read {path}")
    image_rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    result = {"pose": None, "face": None}
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        found = pose.process(image_rgb)
        if found.pose_landmarks:
            result["pose"] = [[p.x, p.y, p.visibility] for p in found.pose_landmarks.landmark]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        found = mesh.process(image_rgb)
        if found.multi_face_landmarks:
            result["face"] = [[p.x, p.y] for p in found.multi_face_landmarks[0].landmark]
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
