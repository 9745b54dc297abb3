"""Disentanglement of codes against known factors of variation: MIG (Chen et al. 2018) and DCI (Eastwood &
Williams 2018), as plain functions of numpy arrays.

Letters in shape comments: N images, Z code dimensions, K factors. Codes are continuous (N, Z) (posterior means);
factors (N, K) are discretised first (`discretise`), as disentanglement_lib does for both measures.
"""

from __future__ import annotations

import numpy as np

from vaelab.measures import DCI_DEPTH, DCI_FIT_IMAGES, DCI_SCORE_IMAGES, DCI_TREES, DISENTANGLEMENT_BINS, MIG_IMAGES


def discretise(values: np.ndarray, bins: int = DISENTANGLEMENT_BINS) -> np.ndarray:
    """(N,) values as bin indices 0..bins-1: `bins` equal-width bins over their range (disentanglement_lib's
    histogram discretiser); values with at most `bins` distinct values (a class label) keep one bin each."""
    distinct, classes = np.unique(values, return_inverse=True)
    if len(distinct) <= bins:
        return classes.reshape(-1)
    edges = np.histogram_bin_edges(values, bins)
    return np.digitize(values, edges[1:-1])


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two discrete (N,) arrays: the plug-in estimate sum_ab p(a,b) log(p(a,b) / (p(a) p(b)))
    from their joint histogram. I(a; a) is the entropy H(a)."""
    a = np.unique(a, return_inverse=True)[1].reshape(-1)
    b = np.unique(b, return_inverse=True)[1].reshape(-1)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= len(a)
    independent = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    seen = joint > 0
    return float((joint[seen] * np.log(joint[seen] / independent[seen])).sum())


def mutual_information_matrix(codes: np.ndarray, factors: np.ndarray, bins: int = DISENTANGLEMENT_BINS) -> np.ndarray:
    """I(z_j; v_k) of every code dimension (each cut into `bins` equal-width bins) and factor, nats.  # (Z, K)"""
    binned = [discretise(column, bins) for column in codes.T]
    return np.array([[mutual_information(z, v) for v in factors.T] for z in binned])


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = DISENTANGLEMENT_BINS) -> float:
    """The mutual information gap (Chen et al. 2018, sec. 5), in [0, 1]:

        MIG = (1/K) sum_k (I(z_j(k); v_k) - max_{j != j(k)} I(z_j; v_k)) / H(v_k),   j(k) = argmax_j I(z_j; v_k)

    the gap between the two codes most informative about each factor, normalised by the factor's entropy, averaged
    over factors. Codes are discretised into `bins` equal-width bins per dimension as in disentanglement_lib;
    factors (N, K) must be discrete (see discretise) and not constant. With one code the runner-up is 0.
    """
    information = mutual_information_matrix(codes, factors, bins)  # (Z, K)
    entropy = np.array([mutual_information(v, v) for v in factors.T])  # (K,)
    if (entropy <= 0).any():
        raise ValueError("MIG needs factors that vary: a constant factor has no entropy to normalise by")
    top_two = -np.sort(-np.vstack([information, np.zeros_like(information[:1])]), axis=0)[:2]  # (2, K)
    return float(np.mean((top_two[0] - top_two[1]) / entropy))


def importance_matrix(
    codes_fit: np.ndarray, factors_fit: np.ndarray, codes_score: np.ndarray, factors_score: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(R (Z, K), held-out accuracy (K,)): a random-forest classifier (DCI_TREES trees of depth DCI_DEPTH) per
    discrete factor, fitted on one set of codes and scored on another; R[j, k] is code j's importance (mean
    impurity decrease, summing to 1) in factor k's forest.

    Eastwood & Williams (2018) use lasso and random-forest regressors; a forest, with every code offered at every
    split, finds the non-linear dependence of a factor on a code (lasso sees only linear ones), costs seconds on
    two cores where disentanglement_lib's gradient-boosted trees take minutes, and gives irrelevant codes no
    importance when one code alone predicts the factor (extremely randomised trees, cheaper still, leak some).
    """
    from sklearn.ensemble import RandomForestClassifier

    importance = np.zeros((codes_fit.shape[1], factors_fit.shape[1]))
    accuracy = np.zeros(factors_fit.shape[1])
    for k in range(factors_fit.shape[1]):
        forest = RandomForestClassifier(
            n_estimators=DCI_TREES, max_depth=DCI_DEPTH, max_features=None, random_state=seed, n_jobs=1
        )
        forest.fit(codes_fit, factors_fit[:, k])
        importance[:, k] = forest.feature_importances_
        accuracy[k] = forest.score(codes_score, factors_score[:, k])
    return importance, accuracy


def _one_minus_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """1 - H(p) along `axis` with the logarithm to the base of that axis's length, p normalised there first."""
    p = p / np.maximum(p.sum(axis, keepdims=True), 1e-12)
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return 1.0 + terms.sum(axis) / np.log(p.shape[axis])


def dci_scores(importance: np.ndarray) -> tuple[float | None, float | None]:
    """(disentanglement D, completeness C) of an importance matrix R (Z, K) (Eastwood & Williams 2018, sec. 3):

        D = sum_j rho_j (1 - H_K(P_j.)),   P_jk = R_jk / sum_k' R_jk',   rho_j = sum_k R_jk / sum_jk R_jk
        C = sum_k w_k (1 - H_Z(P~_.k)),    P~_jk = R_jk / sum_j' R_j'k,  w_k = sum_j R_jk / sum_jk R_jk

    entropies to the base K and Z, so each lies in [0, 1]; D weights codes by their relative importance, and C
    weights factors alike (as disentanglement_lib does; a forest's importances give every factor weight 1/K).
    D needs two factors and C two codes (an entropy to base 1 is undefined): None otherwise.
    """
    total = importance.sum()
    weights = importance if total > 0 else np.ones_like(importance)
    codes, factors = importance.shape
    disentanglement = completeness = None
    if factors > 1:
        rho = weights.sum(1) / weights.sum()
        disentanglement = float((rho * _one_minus_entropy(importance, axis=1)).sum())
    if codes > 1:
        w = weights.sum(0) / weights.sum()
        completeness = float((w * _one_minus_entropy(importance, axis=0)).sum())
    return disentanglement, completeness


def _subsample(n: int, at_most: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most `at_most` of n items, drawn without replacement (all of them when n is smaller)."""
    return np.arange(n) if n <= at_most else np.sort(rng.choice(n, at_most, replace=False))


def disentanglement_measures(
    train_codes: np.ndarray, test_codes: np.ndarray, factors_train: np.ndarray, factors_test: np.ndarray, seed: int = 0
) -> tuple[dict[str, float], dict[str, str]]:
    """(values, why each missing one is missing) of mig, dci_disentanglement, dci_completeness and
    dci_informativeness for codes (N, Z) of both splits and their factors (N, K), raw values.

    Each factor is binned over both splits together (discretise), so both use the same bins. MIG is computed on at
    most MIG_IMAGES test codes, DCI's forests fitted on at most DCI_FIT_IMAGES training codes and scored on at most
    DCI_SCORE_IMAGES test codes (seeded subsamples). Factors constant over the test split are left out.
    """
    n_train = len(factors_train)
    binned = np.column_stack([discretise(v) for v in np.concatenate([factors_train, factors_test]).T])
    varying = [k for k in range(binned.shape[1]) if len(np.unique(binned[n_train:, k])) > 1]
    keys = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness")
    if not varying:
        return {}, dict.fromkeys(keys, "every factor is constant on the test split")
    binned_train, binned_test = binned[:n_train, varying], binned[n_train:, varying]
    rng = np.random.default_rng(seed)
    rows = _subsample(len(test_codes), MIG_IMAGES, rng)
    values = {"mig": mig(test_codes[rows], binned_test[rows])}
    fit, score = _subsample(n_train, DCI_FIT_IMAGES, rng), _subsample(len(test_codes), DCI_SCORE_IMAGES, rng)
    importance, accuracy = importance_matrix(
        train_codes[fit], binned_train[fit], test_codes[score], binned_test[score], seed
    )
    d, c = dci_scores(importance)
    values["dci_informativeness"] = float(accuracy.mean())
    missing = {}
    for key, value, why in (
        ("dci_disentanglement", d, "needs at least 2 factors that vary"),
        ("dci_completeness", c, "needs at least 2 code dimensions"),
    ):
        if value is None:
            missing[key] = why
        else:
            values[key] = value
    return values, missing
