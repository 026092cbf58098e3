"""The one error every reader in ``minicnn.io`` raises for a file it cannot trust."""


class FormatError(ValueError):
    """A weight file is truncated, corrupt, of another format, or asks for something a
    tensor file never needs. The message names the file and what was expected.

    It is a ``ValueError`` so that code which already guards checkpoint loading with
    ``except ValueError`` keeps working; a missing file stays ``FileNotFoundError``.
    """

    def __init__(self, path, problem):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")
