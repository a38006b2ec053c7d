"""A model that raises on rows of one vendor: a shard's own fault, reported per shard."""


def load_model(bad_vendor: str = "DDS"):
    def model(batch):
        if (batch["vendor_id"] == bad_vendor).any():
            raise ValueError(f"cannot score vendor {bad_vendor}")
        return batch[["passenger_count"]].rename(columns={"passenger_count": "score"})

    model.columns = ["vendor_id", "passenger_count"]
    return model
