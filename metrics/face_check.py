"""Is a dlib detection a face? The rule the identity metrics apply before scoring an image.

dlib's HOG detector fires on some non-faces (e.g. the round mission patch on the suit in scikit-image's
`astronaut`, score 0.12), and dlib's face descriptor then puts such a crop at cosine 0.82 to the real face:
a false positive scored as a face looks like a good identity match. A detection counts as a face when

1. its detector score (the HOG SVM margin, `detector.run(img, upsample, 0)`) is at least `min_score`
   (default `DLIB_MIN_SCORE` = 0.3; clear faces score 0.4-3: the astronaut's face 1.16, posterized 0.78, a
   tight 256-px crop of it 0.44; the false positives we found score below 0.15), and
2. its 5-point landmarks are plausible (`landmark_problem`): the eyes side by side (inter-ocular distance
   0.25-0.75 of the box width, roll under 40 degrees), in the upper 60% of the box, and the nose below the
   eye line (by at least 0.3 inter-ocular distances) and between the eyes.

Heavily blurred faces also score below 0.3 (0.05-0.08 with a 3-px Gaussian blur): they are then reported
as "not a face" with the reason, counted and named, never silently scored or dropped.
"""

import math
from dataclasses import dataclass

import numpy as np

DLIB_MIN_SCORE = 0.3
RULE = 'dlib_hog score >= {min_score:g} at upsample {upsample}, plausible 5-point landmarks'


@dataclass(frozen=True)
class FaceCheck:
    """The verdict on one image: 'face', 'no_face' (nothing detected) or 'not_face' (a detection rejected)."""
    status: str
    score: float = None     # Detector score of the largest detection, None without one.
    reason: str = ''        # Why it is not a face ('' for faces).

    @property
    def is_face(self) -> bool:
        return self.status == 'face'

    def describe(self) -> str:
        return 'face' if self.is_face else ('no face detected' if self.status == 'no_face' else f'not a face: {self.reason}')


def landmark_problem(points, box_left, box_top, box_width) -> str:
    """'' when dlib's 5 landmarks [5, 2] (two eye corners each, then the nose base) look like a face, else why not."""
    p = (np.asarray(points, np.float64) - [box_left, box_top]) / box_width   # In box widths.
    eye_a, eye_b, nose = p[0:2].mean(0), p[2:4].mean(0), p[4]
    left, right = (eye_a, eye_b) if eye_a[0] <= eye_b[0] else (eye_b, eye_a)
    axis = right - left
    iod = float(np.hypot(*axis))
    if not 0.25 <= iod <= 0.75:
        return f'eyes {iod:.2f} box widths apart (expected 0.25-0.75)'
    roll = math.degrees(math.atan2(axis[1], axis[0]))
    if abs(roll) > 40:
        return f'eyes not side by side (roll {roll:.0f} degrees)'
    if not all(-0.1 <= e[1] <= 0.6 for e in (left, right)):
        return 'eyes outside the upper 60% of the face box'
    normal = np.array([-axis[1], axis[0]]) / iod            # Points down the face (image y grows downwards).
    drop = float((nose - left) @ normal) / iod
    if drop < 0.3:
        return f'nose {drop:.2f} eye distances below the eye line (expected >= 0.3)'
    along = float((nose - left) @ axis) / iod ** 2
    if not -0.1 <= along <= 1.1:
        return 'nose not between the eyes'
    return ''


class DlibFaceCheck:
    """dlib's HOG detector + 5-point landmarks; `check(img)` -> (FaceCheck, detection or None, shape or None)."""

    def __init__(self, shape_predictor_path, upsample: int = 1, min_score: float = DLIB_MIN_SCORE):
        import dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(str(shape_predictor_path))
        self.upsample, self.min_score = int(upsample), float(min_score)
        self.rule = RULE.format(min_score=self.min_score, upsample=self.upsample)

    def check(self, img: np.ndarray):
        """img: uint8 [H, W, 3]. The largest detection is the subject."""
        img = np.ascontiguousarray(img)
        dets, scores, _ = self.detector.run(img, self.upsample, 0)
        if len(dets) == 0:
            return FaceCheck('no_face'), None, None
        k = max(range(len(dets)), key=lambda i: dets[i].width() * dets[i].height())
        det, score = dets[k], float(scores[k])
        shape = self.shape_predictor(img, det)
        if score < self.min_score:
            return FaceCheck('not_face', score, f'detector score {score:.3f} < {self.min_score:g}'), det, shape
        points = [(shape.part(i).x, shape.part(i).y) for i in range(5)]
        problem = landmark_problem(points, det.left(), det.top(), det.width())
        if problem:
            return FaceCheck('not_face', score, f'implausible landmarks: {problem}'), det, shape
        return FaceCheck('face', score), det, shape
