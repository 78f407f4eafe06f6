"""Near-duplicate detection: a balanced, diverse data set needs more than many copies of one sentence.

Similarity is the Jaccard index of the two texts' sets of lower-case word tokens
(|A and B| / |A or B|). Both texts then share at least that fraction of their distinct words.
"""

from __future__ import annotations

TOKEN_PATTERN = r"(?u)\b\w+\b"


def near_duplicate_pairs(texts: list[str], threshold: float = 0.8) -> list[tuple[int, int, float]]:
    """Index pairs ``(i, j, similarity)`` with ``i < j`` whose word-set Jaccard index is >= threshold."""
    from sklearn.feature_extraction.text import CountVectorizer

    if len(texts) < 2:
        return []
    sets = CountVectorizer(binary=True, lowercase=True, token_pattern=TOKEN_PATTERN).fit_transform(texts)
    sizes = sets.sum(axis=1).A1
    shared = (sets @ sets.T).tocoo()  # |A and B| for every pair with at least one word in common
    pairs = []
    for i, j, both in zip(shared.row, shared.col, shared.data, strict=True):
        if i < j:
            union = sizes[i] + sizes[j] - both
            similarity = both / union if union else 1.0
            if similarity >= threshold:
                pairs.append((int(i), int(j), float(similarity)))
    return sorted(pairs)


def near_duplicate_share(texts: list[str], threshold: float = 0.8) -> float:
    """Fraction of texts that have at least one near-duplicate among the others."""
    involved = {k for i, j, _ in near_duplicate_pairs(texts, threshold) for k in (i, j)}
    return len(involved) / len(texts) if texts else 0.0
