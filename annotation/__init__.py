"""Human annotation: inter-annotator agreement (Krippendorff's alpha, ordinal) and
automatic-evaluator accuracy on unanimous pairwise rankings; see :mod:`annotation.agreement`."""
