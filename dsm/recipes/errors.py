"""The error every recipe check raises."""


class RecipeError(ValueError):
    """A recipe (or its data) is unusable; the message names the file and the key."""
