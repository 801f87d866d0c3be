"""A hand-computed agreement example shared by the unit tests and the real-server test.

3 annotators (ann1..ann3) x 2 samples (s1, s2) x 4 versions (g1, g2, g3, orig): their ranks,
their 1-5 ratings with alpha worked out by hand, and one automatic evaluator's scores with its
accuracy worked out by hand.
"""

from __future__ import annotations

ANNOTATORS = ("ann1", "ann2", "ann3")
SAMPLES = ("s1", "s2")
VERSIONS = ("g1", "g2", "g3", "orig")

# Version names sorted: g1 < g2 < g3 < orig, so the 6 pairs per sample are
# (g1,g2) (g1,g3) (g1,orig) (g2,g3) (g2,orig) (g3,orig).  Rank 1 = best.
RANKINGS = {
    "ann1": {"s1": {"orig": 1, "g1": 2, "g2": 3, "g3": 4},
             "s2": {"orig": 2, "g1": 1, "g2": 3, "g3": 3}},
    "ann2": {"s1": {"orig": 1, "g1": 2, "g2": 4, "g3": 3},
             "s2": {"orig": 2, "g1": 1, "g2": 3, "g3": 3}},
    "ann3": {"s1": {"orig": 1, "g1": 2, "g2": 3, "g3": 3},
             "s2": {"orig": 1, "g1": 2, "g2": 3, "g3": 3}},
}
# s1: (g1,g2)   2<4,2<4,2<3           -> A,A,A     unanimous A
#     (g1,g3)   2<4,2<3,2<3           -> A,A,A     unanimous A
#     (g1,orig) 2>1 for all           -> B,B,B     unanimous B
#     (g2,g3)   3<4, 4>3, 3=3         -> A,B,tie   disagreed
#     (g2,orig) B,B,B                              unanimous B
#     (g3,orig) B,B,B                              unanimous B
# s2: (g1,g2)   1<3,1<3,2<3           -> A,A,A     unanimous A
#     (g1,g3)   A,A,A                              unanimous A
#     (g1,orig) 1<2, 1<2, 2>1         -> A,A,B     disagreed
#     (g2,g3)   3=3 for all           -> tie x3    all-tie: no preferred video, excluded
#     (g2,orig) B,B,B                              unanimous B
#     (g3,orig) B,B,B                              unanimous B
EXPECTED_UNANIMOUS = [
    ("s1", "g1", "g2", "A"), ("s1", "g1", "g3", "A"), ("s1", "g1", "orig", "B"),
    ("s1", "g2", "orig", "B"), ("s1", "g3", "orig", "B"),
    ("s2", "g1", "g2", "A"), ("s2", "g1", "g3", "A"),
    ("s2", "g2", "orig", "B"), ("s2", "g3", "orig", "B"),
]
EXPECTED_ALL_TIE = [("s2", "g2", "g3")]
EXPECTED_DISAGREED = 2

# Automatic evaluator scores (higher = better).
SCORES = {
    ("s1", "orig"): 0.9, ("s1", "g1"): 0.5, ("s1", "g2"): 0.5, ("s1", "g3"): 0.7,
    ("s2", "orig"): 0.8, ("s2", "g1"): 0.6, ("s2", "g2"): 0.4, ("s2", "g3"): 0.45,
}
# Predictions on the 9 unanimous pairs and their credit:
#   s1 (g1,g2)   .5 vs .5   -> tie  (human A)   0.5
#   s1 (g1,g3)   .5 vs .7   -> B    (human A)   0
#   s1 (g1,orig) .5 vs .9   -> B    (human B)   1
#   s1 (g2,orig) .5 vs .9   -> B    (human B)   1
#   s1 (g3,orig) .7 vs .9   -> B    (human B)   1
#   s2 (g1,g2)   .6 vs .4   -> A    (human A)   1
#   s2 (g1,g3)   .6 vs .45  -> A    (human A)   1
#   s2 (g2,orig) .4 vs .8   -> B    (human B)   1
#   s2 (g3,orig) .45 vs .8  -> B    (human B)   1
# (the all-tie pair s2 (g2,g3) is not scored: no video is preferred)
# credit = 0.5 + 0 + 7 * 1 = 7.5 -> accuracy = 7.5 / 9; every pair answered -> coverage = 1
# answers picking a video = 9 - 1 tie = 8, correct among them = 7 -> accuracy_decided = 7 / 8


# The same evaluator on the 1-5 scale of a score-based judge: the order and the ties of
# SCORES are kept (s1: g1 = g2 < g3 < orig; s2: g2 < g3 < g1 < orig), so every prediction,
# and with it every number below, is unchanged.
JUDGE_SCORES = {
    ("s1", "orig"): 5, ("s1", "g1"): 3, ("s1", "g2"): 3, ("s1", "g3"): 4,
    ("s2", "orig"): 5, ("s2", "g1"): 4, ("s2", "g2"): 2, ("s2", "g3"): 3,
}
EXPECTED_JUDGE = {"accuracy": 7.5 / 9, "coverage": 1.0, "accuracy_answered": 7.5 / 9, "accuracy_decided": 7 / 8,
                  "n_pairs": 9, "n_answered": 9, "n_failed": 0, "n_ties": 1, "n_decided": 8, "n_correct": 7}

# Ratings. The 8 clips in order: (s1,g1) (s1,g2) (s1,g3) (s1,orig) (s2,g1) (s2,g2) (s2,g3) (s2,orig).
# lip_sync and motion_quality: the three annotators agree on every clip -> alpha = 1.
# expressiveness: clips 1-4 all rated 2, clips 5-7 all rated 3, clip 8 rated (2, 2, 3).
#   Values: n_2 = 4*3 + 2 = 14, n_3 = 3*3 + 1 = 10, n = 24.
#   Only clip 8 disagrees: of its 3*2 ordered rater pairs, 4 pair a 2 with a 3, each weighted
#   1/(m-1) = 1/2, so the observed coincidences are o_23 = o_32 = 1.
#   With two values the ordinal distance is one constant delta, so
#   D_o = (o_23 + o_32) * delta / n = 2 delta / n,
#   D_e = 2 * n_2 * n_3 * delta / (n (n-1)) = 280 delta / (24 * 23),
#   alpha = 1 - D_o / D_e = 1 - 2 * 23 / 280 = 1 - 23 / 140 = 117 / 140 = 0.835714...
CLIPS = [(s, v) for s in SAMPLES for v in VERSIONS]
_AGREED = {"lip_sync": [5, 4, 2, 1, 3, 5, 4, 2], "motion_quality": [1, 2, 3, 4, 5, 4, 3, 2]}
_EXPRESSIVENESS = [[2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [3, 3, 3], [3, 3, 3], [3, 3, 3], [2, 2, 3]]
EXPECTED_ALPHA = {"lip_sync": 1.0, "expressiveness": 117 / 140, "motion_quality": 1.0}


def ratings(annotator_index: int, clip_index: int) -> dict[str, int]:
    """The three 1-5 ratings annotator ``annotator_index`` gives clip ``clip_index``."""
    return {"lip_sync": _AGREED["lip_sync"][clip_index],
            "expressiveness": _EXPRESSIVENESS[clip_index][annotator_index],
            "motion_quality": _AGREED["motion_quality"][clip_index]}


def human_rows(annotators=ANNOTATORS) -> list[dict]:
    """The whole example as tidy rows, as Label Studio's export gives them."""
    rows = []
    for a, annotator in enumerate(annotators):
        for c, (sample, version) in enumerate(CLIPS):
            for aspect, score in ratings(a, c).items():
                rows.append({"annotator": annotator, "sample": sample, "version": version,
                             "aspect": aspect, "score": score})
            rows.append({"annotator": annotator, "sample": sample, "version": version, "aspect": "rank",
                         "score": RANKINGS[ANNOTATORS[a]][sample][version]})
    return rows
