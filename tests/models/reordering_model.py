"""A model whose pandas answer comes back in another row order than its batch, the ways pandas code reorders rows.

The prediction is `x * 2`, and the test data has x = id / 2, so each row's prediction equals its own key `id`:
a prediction beside another row's key is seen at once. `how`:
- "sort_values": a Series, the batch sorted by x descending inside the model;
- "sample": a Series after sample(frac=1) (every row, shuffled);
- "frame": a DataFrame with a shuffled index;
- "arrow_series": batch_format pyarrow, answered with a pandas Series in shuffled order (compared with RangeIndex);
- "positional_series": pd.Series(array), indexed 0..n-1 whatever the batch's index (positions, kept);
- "set_index": a Series indexed by the batch's `id` column (other labels: cannot be matched, refused);
- "duplicates": a Series whose index repeats its first label (refused).
"""

import numpy as np
import pandas as pd


class ReorderingModel:
    def __init__(self, how: str):
        self.how = how
        self.batch_format = "pyarrow" if how == "arrow_series" else "pandas"

    def __call__(self, batch):
        if self.how == "arrow_series":
            batch = batch.to_pandas()
        score = (batch["x"] * 2).rename("score")
        if self.how == "sort_values":
            return (batch.sort_values("x", ascending=False)["x"] * 2).rename("score")
        if self.how in ("sample", "arrow_series"):
            return score.sample(frac=1, random_state=7)
        if self.how == "frame":
            return pd.DataFrame({"score": score}).iloc[np.random.default_rng(3).permutation(len(batch))]
        if self.how == "positional_series":
            return pd.Series(score.to_numpy(), name="score")
        if self.how == "set_index":
            return score.set_axis(batch["id"])
        if self.how == "duplicates":
            return score.set_axis([score.index[0]] * len(score))
        raise ValueError(f"unknown how={self.how!r}")


def load_model(how: str):
    return ReorderingModel(how)
