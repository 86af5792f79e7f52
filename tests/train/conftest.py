import pytest


@pytest.fixture
def calli(tiny_home):
    """A small synthetic calligraphy dataset (6 train + 2 val) in a home with the tiny base."""
    from styler.data.library import synth_dataset

    synth_dataset("calligraphy/mifu", kind="calligraphy", n=8, size=64, val_split=0.25, trigger="mifu")
    return "calligraphy/mifu"
