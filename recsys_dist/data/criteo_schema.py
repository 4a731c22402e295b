"""The Criteo click-log layout (Kaggle display-advertising and Terabyte): label, I1..I13, C1..C26, tab-separated."""

NUM_DENSE = 13
NUM_CATEGORICAL = 26
LABEL = "label"
DENSE_NAMES = tuple(f"I{i}" for i in range(1, NUM_DENSE + 1))
CATEGORICAL_NAMES = tuple(f"C{i}" for i in range(1, NUM_CATEGORICAL + 1))
COLUMNS = (LABEL,) + DENSE_NAMES + CATEGORICAL_NAMES
NUM_COLUMNS = len(COLUMNS)  # 40

# MLPerf DLRM-DCNv2 table sizes for Criteo Terabyte (hashing cap 40M), in C1..C26 order.
TERABYTE_MLPERF_ROWS = (
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10, 2209, 11938, 155, 4,
    976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36,
)
# Criteo Kaggle (display advertising challenge) cardinalities, as in torchrec's DLRM example.
KAGGLE_ROWS = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992, 5461306, 10, 5652,
    2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)
