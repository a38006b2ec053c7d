"""A model that answers with the column it was given, unchanged: the output shows exactly what the model saw."""


class EchoModel:
    def __init__(self, column: str, batch_format: str):
        self.column = column
        self.columns = [column]
        self.batch_format = batch_format

    def __call__(self, batch):
        if self.batch_format == "pandas":
            return batch[self.column].rename("seen")
        return {"seen": batch.column(self.column)}


def load_model(column: str, batch_format: str = "pandas"):
    return EchoModel(column, batch_format)
