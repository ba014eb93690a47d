from tests.mistakes import Mistake

MISTAKES = [
    Mistake(
        "1.1", "sin and cos swapped",
        "table[:, 0::2] = torch.sin(angles)  # even columns: sin\n    table[:, 1::2] = torch.cos(angles)",
        "table[:, 0::2] = torch.cos(angles)  # even columns: sin\n    table[:, 1::2] = torch.sin(angles)",
        "sin and cos swapped",
    ),
    Mistake(
        "1.1", "exponent i instead of 2i",
        "two_i = torch.arange(0, d_model, 2, dtype=torch.float64)",
        "two_i = torch.arange(0, d_model // 2, dtype=torch.float64)",
        "exponent i instead of 2i",
    ),
    Mistake(
        "1.1", "halves concatenated instead of interleaved",
        "table[:, 0::2] = torch.sin(angles)  # even columns: sin\n    table[:, 1::2] = torch.cos(angles)",
        "table[:, : d_model // 2] = torch.sin(angles)  # even columns: sin\n    table[:, d_model // 2 :] = torch.cos(angles)",
        "halves concatenated",
    ),
    Mistake(
        "1.1", "the table registered as a Parameter",
        'self.register_buffer("pe", sinusoidal_table(max_len, d_model))',
        "self.pe = nn.Parameter(sinusoidal_table(max_len, d_model))",
        "registered as a Parameter",
    ),
    Mistake(
        "1.1", "token embeddings not scaled",
        "return self.embedding(ids) * math.sqrt(self.d_model)",
        "return self.embedding(ids)",
        "no scaling by sqrt(d_model)",
    ),
]

MISTAKES += [
    Mistake(
        "1.1", "exponent uses the column index j",
        "table[:, 1::2] = torch.cos(angles)  # odd columns: cos of the same frequency",
        "table[:, 1::2] = torch.cos(pos * torch.exp(-math.log(10000.0) * (two_i + 1) / d_model))",
        "exponent uses the column index j",
    ),
    Mistake(
        "1.1", "token embeddings scaled by d_model",
        "return self.embedding(ids) * math.sqrt(self.d_model)",
        "return self.embedding(ids) * self.d_model",
        "scaled by d_model instead of sqrt(d_model)",
    ),
    Mistake(
        "1.1", "the table kept as a plain attribute",
        'self.register_buffer("pe", sinusoidal_table(max_len, d_model))',
        "self.pe = sinusoidal_table(max_len, d_model)",
        "use self.register_buffer",
    ),
]
