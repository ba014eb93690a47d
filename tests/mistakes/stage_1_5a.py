from tests.mistakes import Mistake

_EXACT = "return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))"

MISTAKES = [
    Mistake("1.5a", "ReLU where GELU belongs", _EXACT, "return torch.relu(x)", "ReLU where GELU belongs"),
    Mistake(
        "1.5a",
        "sigmoid approximation x·σ(1.702x) instead of GELU",
        _EXACT,
        "return x * torch.sigmoid(1.702 * x)",
        "sigmoid approximation",
    ),
    Mistake(
        "1.5a",
        "erf(x) instead of erf(x/√2)",
        _EXACT,
        "return 0.5 * x * (1.0 + torch.erf(x))",
        "erf(x) instead of erf(x/√2)",
    ),
    Mistake(
        "1.5a",
        "tanh constant sqrt(pi/2) instead of sqrt(2/pi)",
        "inner = math.sqrt(2.0 / math.pi) * (x",
        "inner = math.sqrt(math.pi / 2.0) * (x",
        "sqrt(pi/2) instead of sqrt(2/pi)",
    ),
    Mistake(
        "1.5a",
        "cubic coefficient 0.44715 instead of 0.044715",
        "(x + 0.044715 * x.pow(3))",
        "(x + 0.44715 * x.pow(3))",
        "0.44715 instead of 0.044715",
    ),
    Mistake(
        "1.5a",
        "tanh written with exp, which overflows",
        "return 0.5 * x * (1.0 + torch.tanh(inner))",
        "return 0.5 * x * (1.0 + (torch.exp(2 * inner) - 1) / (torch.exp(2 * inner) + 1))",
        "tanh written with exp",
    ),
    Mistake(
        "1.5a",
        "gelu calls F.gelu instead of the formula",
        _EXACT,
        "return torch.nn.functional.gelu(x)",
        "called torch.nn.functional.gelu",
    ),
    Mistake(
        "1.5a",
        "an unknown approximate silently gives the tanh form",
        'if approximate == "tanh":\n        inner',
        "if True:\n        inner",
        "expected ValueError",
    ),
    Mistake(
        "1.5a",
        "no expansion (d_ff = d_model)",
        "d_ff = 4 * d_model if d_ff is None else d_ff",
        "d_ff = d_model if d_ff is None else d_ff",
        "no expansion (d_ff = d_model)",
    ),
    Mistake(
        "1.5a",
        "dropout after linear2 instead of on the hidden layer",
        "return self.linear2(self.dropout(h))",
        "return self.dropout(self.linear2(h))",
        "dropout after linear2",
    ),
    Mistake(
        "1.5a",
        "residual added inside the FeedForward",
        "return self.linear2(self.dropout(h))",
        "return x + self.linear2(self.dropout(h))",
        "residual added inside the FeedForward",
    ),
]
