"""The Ray docs example's model, as users copy it: a factory that declares nothing, pandas in, pandas out.

Used unchanged to prove that a user's own module works: every column is read, the frame is NumPy-backed, and
`batch["passenger_count"] % 2` works on the int8 column. The payload is smaller than the docs' 800 MB.
"""

import numpy as np
import pandas as pd


def load_model():
    # A dummy model.
    def model(batch: pd.DataFrame) -> pd.DataFrame:
        # Dummy payload so copying the model will actually copy some data across nodes.
        model.payload = np.zeros(1_000_000)
        return pd.DataFrame({"score": batch["passenger_count"] % 2 == 0})

    return model
