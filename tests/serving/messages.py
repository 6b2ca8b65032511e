"""stellar.v1 messages from test inputs, and back."""

from __future__ import annotations

import numpy as np

from stellar_core.contract import MODEL_INPUTS


def to_objects(inputs: np.ndarray, prefix: str = "obj"):
    """float32 [n, 6] -> stellar.v1 SdssObject messages with client ids prefix-k."""
    from stellar_api._generated.stellar.v1 import classifier_pb2 as pb

    return [pb.SdssObject(client_id=f"{prefix}-{k}", **dict(zip(MODEL_INPUTS, map(float, row))))
            for k, row in enumerate(inputs)]


def probabilities_of(result, classes=("GALAXY", "QSO", "STAR")) -> list[float]:
    return [result.probabilities[c] for c in classes]
