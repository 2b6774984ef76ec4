"""The one error hierarchy of countersign.

Every failure that a user can cause (bad input, a wrong passphrase, a hostile
server) surfaces as a :class:`CountersignError` subclass carrying a message
that names what was wrong and, where there is one, advice on what to do. The
CLI prints these and exits non-zero; anything else escaping is a bug.
"""

from __future__ import annotations


class CountersignError(Exception):
    """Base of every error countersign raises on purpose."""

    def __init__(self, message: str, *, advice: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice

    def __str__(self) -> str:
        return self.message

    def render(self) -> str:
        """The message and advice as the CLI shows them."""
        if self.advice:
            return f"{self.message}\n  hint: {self.advice}"
        return self.message


class FormatError(CountersignError):
    """Bytes that are not what they claim to be (JSON, metadata, PEM, DER)."""


class CanonicalJSONError(FormatError):
    """JSON that notary's canonical encoder or strict decoder would refuse."""


class KeyFormatError(FormatError):
    """A public or private key, or a certificate, that cannot be used."""


class UnsupportedAlgorithmError(CountersignError):
    """A key type or signature method that notary does not use."""


class CertificateError(CountersignError):
    """A root or delegation certificate that notary's checks refuse."""


class SignatureError(CountersignError):
    """A signature that cannot be made or is malformed."""


class VerificationError(CountersignError):
    """Metadata whose signatures, threshold, expiry or version are not acceptable."""


class ExpiredMetadataError(VerificationError):
    """Metadata past its ``expires`` time."""


class RollbackError(VerificationError):
    """Metadata older than a version already trusted."""


class KeystoreError(CountersignError):
    """A private key that cannot be stored, found or unlocked."""


class PassphraseError(KeystoreError):
    """A passphrase that is missing or wrong."""


class KeyRoleError(KeystoreError):
    """A key that exists but belongs to another role or repository."""


class RemoteError(CountersignError):
    """A trust server (or a mirror) did not give what was asked for."""


class NotFoundError(RemoteError):
    """The server has no such metadata (HTTP 404)."""


class ServerRejectedError(RemoteError):
    """The server refused an update (HTTP 400), with notary's error code and detail."""

    def __init__(self, message: str, *, code: str = "", detail: object = None,
                 advice: str | None = None) -> None:
        super().__init__(message, advice=advice)
        self.code = code
        self.detail = detail


class ServerUnavailableError(RemoteError):
    """The server could not be reached, timed out, or answered with another status."""


class AuthenticationError(RemoteError):
    """The server wants credentials that were not given or not accepted (HTTP 401)."""


class DownloadError(RemoteError):
    """A download broke a bound: too long, too slow, or cut short."""
