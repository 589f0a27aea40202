"""What the runner reports when a candidate breaks the contract at run time, shared by its stages."""


class CandidateError(Exception):
    """The candidate broke the contract at run time; `kind` says which rule."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
